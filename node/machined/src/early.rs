//! The first things PID 1 does: pseudo-filesystems and the runtime directories.

use std::path::PathBuf;

use talos_node_sys::SysError;
use talos_node_sys::fs::{MountFlags, MountSpec, Mounter};

const SECURE: MountFlags = MountFlags {
    nosuid: true,
    nodev: true,
    noexec: true,
    relatime: true,
};

fn mount(source: &str, target: &str, fstype: &str, flags: MountFlags, data: &str) -> MountSpec {
    MountSpec {
        source: source.into(),
        target: PathBuf::from(target),
        fstype: fstype.into(),
        flags,
        data: data.into(),
    }
}

/// The pseudo-filesystems, in mount order (a target's parent is mounted first).
pub fn pseudo_filesystems() -> Vec<MountSpec> {
    vec![
        mount("proc", "/proc", "proc", SECURE, ""),
        mount("sysfs", "/sys", "sysfs", SECURE, ""),
        mount(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MountFlags {
                noexec: false,
                nodev: false,
                ..SECURE
            },
            "mode=0755",
        ),
        mount(
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags {
                nodev: false,
                ..SECURE
            },
            "ptmxmode=000,mode=620,gid=5",
        ),
        mount(
            "tmpfs",
            "/run",
            "tmpfs",
            MountFlags {
                noexec: false,
                ..SECURE
            },
            "mode=0755",
        ),
        mount("tmpfs", "/tmp", "tmpfs", SECURE, "mode=1777"),
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", SECURE, "nsdelegate"),
    ]
}

/// Mounts every pseudo-filesystem, creating each mount point first.
pub fn mount_pseudo_filesystems(mounter: &dyn Mounter) -> Result<(), SysError> {
    for spec in pseudo_filesystems() {
        std::fs::create_dir_all(&spec.target)
            .map_err(|e| SysError::new("mkdir", spec.target.display().to_string(), e))?;
        mounter.mount(&spec)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_filesystems_are_all_mounted_parents_first() {
        let specs = pseudo_filesystems();
        let targets: Vec<String> = specs
            .iter()
            .map(|s| s.target.display().to_string())
            .collect();
        for required in ["/proc", "/sys", "/dev", "/run", "/sys/fs/cgroup"] {
            assert!(targets.contains(&required.to_owned()), "{required} missing");
        }
        for (i, t) in targets.iter().enumerate() {
            let parent = std::path::Path::new(t)
                .parent()
                .unwrap()
                .display()
                .to_string();
            if let Some(p) = targets.iter().position(|x| *x == parent) {
                assert!(p < i, "{parent} must be mounted before {t}");
            }
        }
        let devtmpfs = specs.iter().find(|s| s.fstype == "devtmpfs").unwrap();
        assert!(!devtmpfs.flags.nodev, "/dev must allow device nodes");
        assert_eq!(
            specs.iter().find(|s| s.fstype == "cgroup2").unwrap().target,
            PathBuf::from("/sys/fs/cgroup")
        );
    }
}
