//! Memory profiles: cgroup v2 memory limits for the supervisor's services and sysctls, shared
//! between boards as `boards/memory/<name>.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Directory next to the boards that holds the profiles.
pub const MEMORY_DIR: &str = "memory";

/// One profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryProfile {
    pub description: String,
    /// The smallest RAM the profile is meant for; the reservations must fit in half of it.
    pub min_ram_mib: u32,
    pub services: BTreeMap<Service, ServiceMemory>,
    /// `sysctl` name to integer value, e.g. `vm.overcommit_memory = 1`.
    #[serde(default)]
    pub sysctls: BTreeMap<String, i64>,
}

/// Services the supervisor puts in their own cgroup, by upstream's service id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Machined,
    Apid,
    Trustd,
    Containerd,
    Cri,
    Udevd,
    Etcd,
    Kubelet,
    Sandbox,
}

/// Limits for one service's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceMemory {
    /// `memory.min`: reserved, never reclaimed.
    pub min_mib: u32,
    /// `memory.max`: the hard limit, if any.
    #[serde(default)]
    pub max_mib: Option<u32>,
}

impl MemoryProfile {
    /// The profile as the node reads it (`/etc/talos/memory`): one `<service> <min MiB>
    /// [<max MiB>]` line per service.
    pub fn node_table(&self) -> String {
        self.services
            .iter()
            .map(|(service, memory)| match memory.max_mib {
                Some(max) => format!("{} {} {max}\n", service.as_str(), memory.min_mib),
                None => format!("{} {}\n", service.as_str(), memory.min_mib),
            })
            .collect()
    }

    /// The sysctls as the node reads them (`/etc/talos/sysctl.conf`): `name = value` lines.
    pub fn sysctl_conf(&self) -> String {
        self.sysctls
            .iter()
            .map(|(name, value)| format!("{name} = {value}\n"))
            .collect()
    }

    /// Sum of all `memory.min` reservations.
    pub fn reserved_mib(&self) -> u32 {
        self.services.values().map(|s| s.min_mib).sum()
    }

    /// The first problem as (field, reason), fields relative to the profile file.
    pub(crate) fn problem(&self) -> Option<(String, String)> {
        if self.description.trim().is_empty() {
            return Some(("description".into(), "is empty".into()));
        }
        for (service, limits) in &self.services {
            if let Some(max) = limits.max_mib.filter(|max| *max < limits.min_mib.max(1)) {
                return Some((
                    format!("services.{}.max_mib", service.as_str()),
                    format!("{max} is below min_mib {}", limits.min_mib),
                ));
            }
        }
        let reserved = self.reserved_mib();
        if reserved > self.min_ram_mib / 2 {
            return Some((
                "services".into(),
                format!(
                    "reserve {reserved} MiB in total, more than half of min_ram_mib {}",
                    self.min_ram_mib
                ),
            ));
        }
        self.sysctls.keys().find(|k| !is_sysctl_name(k)).map(|key| {
            (
                "sysctls".into(),
                format!("key {key:?} must be a dotted sysctl name such as vm.overcommit_memory"),
            )
        })
    }
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Machined => "machined",
            Service::Apid => "apid",
            Service::Trustd => "trustd",
            Service::Containerd => "containerd",
            Service::Cri => "cri",
            Service::Udevd => "udevd",
            Service::Etcd => "etcd",
            Service::Kubelet => "kubelet",
            Service::Sandbox => "sandbox",
        }
    }
}

fn is_sysctl_name(key: &str) -> bool {
    key.contains('.')
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        })
}
