//! Semantic checks of a parsed config, per runtime mode.

use std::fmt;

use super::{Config, EndpointUrl, MachineType};
use crate::pki;

/// The runtime mode a config is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationMode {
    /// Bare metal or SBC: an install disk is required.
    Metal,
    /// Inside a container: install and disk settings are ignored.
    Container,
    /// A cloud VM: the platform provides the disk.
    Cloud,
}

/// One finding, tied to a YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted YAML path, e.g. `machine.ca.crt`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Errors make the config unusable; warnings do not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationReport {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl Config {
    /// Checks the config for `mode`.
    pub fn validate(&self, mode: ValidationMode) -> ValidationReport {
        let mut report = ValidationReport::default();
        let machine = &self.v1alpha1.machine;

        check_os_ca(self, &mut report);
        for (i, ca) in machine.accepted_cas.iter().enumerate() {
            if let Err(e) = pki::pem_to_der_certs(ca.crt.as_str()) {
                report.error(format!("machine.acceptedCAs[{i}].crt"), e.to_string());
            }
        }

        match machine.token.as_deref() {
            None | Some("") => report.error("machine.token", "is required"),
            Some(token) if !pki::is_valid_token(token) => report.error(
                "machine.token",
                "must have the form [a-z0-9]{6}.[a-z0-9]{16}",
            ),
            Some(_) => {}
        }

        match self.control_plane_endpoint() {
            None | Some("") => report.error("cluster.controlPlane.endpoint", "is required"),
            Some(url) => {
                if let Err(message) = EndpointUrl::parse(url) {
                    report.error("cluster.controlPlane.endpoint", message);
                }
            }
        }

        if let Some(hostname) = self.hostname()
            && !is_valid_hostname(hostname)
        {
            report.error(
                "machine.network.hostname",
                format!("{hostname:?} is not a valid host name"),
            );
        }

        for (i, interface) in self.interfaces().iter().enumerate() {
            for (j, address) in interface.addresses.iter().enumerate() {
                if !is_cidr(address) {
                    report.error(
                        format!("machine.network.interfaces[{i}].addresses[{j}]"),
                        format!("{address:?} is not an address in CIDR notation"),
                    );
                }
            }
        }

        for (i, server) in self.nameservers().iter().enumerate() {
            if server.parse::<std::net::IpAddr>().is_err() {
                report.error(
                    format!("machine.network.nameservers[{i}]"),
                    format!("{server:?} is not an IP address"),
                );
            }
        }

        let install = self.install();
        let has_disk = install.is_some_and(|i| {
            i.disk.as_deref().is_some_and(|d| !d.is_empty()) || i.disk_selector.is_some()
        });
        match mode {
            ValidationMode::Metal if !has_disk => report.error(
                "machine.install.disk",
                "an install disk or disk selector is required in metal mode",
            ),
            ValidationMode::Container if install.is_some() => {
                report.warning("machine.install", "ignored in container mode")
            }
            _ => {}
        }

        if machine.features.as_ref().and_then(|f| f.rbac) == Some(false) {
            report.warning(
                "machine.features.rbac",
                "RBAC is off: every client certificate signed by the OS CA acts as os:admin",
            );
        }
        report
    }
}

fn check_os_ca(config: &Config, report: &mut ValidationReport) {
    let ca = match config.os_ca() {
        Ok(Some(ca)) => ca,
        Ok(None) => {
            report.error("machine.ca.crt", "is required");
            return;
        }
        Err(e) => {
            report.error("machine.ca.crt", e.to_string());
            return;
        }
    };
    match ca.key_pem.as_deref() {
        Some(key) => match pki::key_matches_cert(&ca.cert_pem, key) {
            Ok(true) => {}
            Ok(false) => report.error("machine.ca.key", "does not match machine.ca.crt"),
            Err(e) => report.error("machine.ca.key", e.to_string()),
        },
        None if config.machine_type() == MachineType::ControlPlane => report.error(
            "machine.ca.key",
            "is required on a control plane node (it signs client and worker certificates)",
        ),
        None => {}
    }
}

fn is_valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_cidr(value: &str) -> bool {
    let Some((address, prefix)) = value.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}
