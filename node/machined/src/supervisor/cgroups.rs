//! Per-service cgroup v2 groups with memory reservations and limits, under a root that is
//! /sys/fs/cgroup on a node and a temporary directory in tests.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Controllers enabled for every group below the root.
const CONTROLLERS: &str = "+cpu +memory +pids";

/// Memory settings for one group, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryLimits {
    /// `memory.min`: never reclaimed from the group.
    pub min: u64,
    /// `memory.max`: the hard limit, if any.
    pub max: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {source}")]
pub struct CgroupError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError {
            path: path.to_owned(),
            source,
        })
}

#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    pub fn new(root: impl Into<PathBuf>) -> Cgroups {
        Cgroups { root: root.into() }
    }

    /// Creates `relative` (e.g. `podruntime/etcd`) with `limits`, enabling the controllers on
    /// every ancestor, and opens its `cgroup.procs` for a child to join.
    pub fn prepare(&self, relative: &str, limits: MemoryLimits) -> Result<File, CgroupError> {
        let mut dir = self.root.clone();
        for part in relative.split('/') {
            write(&dir.join("cgroup.subtree_control"), CONTROLLERS)?;
            dir.push(part);
            fs::create_dir_all(&dir).map_err(|source| CgroupError {
                path: dir.clone(),
                source,
            })?;
        }
        write(&dir.join("memory.min"), &limits.min.to_string())?;
        let max = limits
            .max
            .map_or_else(|| "max".to_owned(), |m| m.to_string());
        write(&dir.join("memory.max"), &max)?;
        let procs = dir.join("cgroup.procs");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&procs)
            .map_err(|source| CgroupError {
                path: procs,
                source,
            })
    }

    /// Kills every process left in `relative` (cgroup.kill, Linux 5.14+).
    pub fn kill(&self, relative: &str) -> Result<(), CgroupError> {
        let group = self.root.join(relative);
        if !group.is_dir() {
            return Ok(());
        }
        write(&group.join("cgroup.kill"), "1")
    }

    /// Moves the calling process into `relative` (machined into `init`).
    pub fn join(&self, relative: &str, limits: MemoryLimits) -> Result<(), CgroupError> {
        let mut procs = self.prepare(relative, limits)?;
        procs
            .write_all(std::process::id().to_string().as_bytes())
            .map_err(|source| CgroupError {
                path: self.root.join(relative).join("cgroup.procs"),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_limits_and_enables_controllers_on_the_way_down() {
        let root = tempfile::tempdir().unwrap();
        let cgroups = Cgroups::new(root.path());
        cgroups
            .prepare(
                "podruntime/etcd",
                MemoryLimits {
                    min: 256 << 20,
                    max: None,
                },
            )
            .unwrap();
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), CONTROLLERS);
        assert_eq!(read("podruntime/cgroup.subtree_control"), CONTROLLERS);
        assert_eq!(read("podruntime/etcd/memory.min"), "268435456");
        assert_eq!(read("podruntime/etcd/memory.max"), "max");
        cgroups.kill("podruntime/etcd").unwrap();
        assert_eq!(read("podruntime/etcd/cgroup.kill"), "1");
        cgroups.kill("system/absent").unwrap();
    }

    #[test]
    fn names_the_file_it_could_not_write() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("system"), "a file, not a group").unwrap();
        let err = Cgroups::new(root.path())
            .prepare("system/apid", MemoryLimits::default())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cgroup {}", root.path().join("system").display()))
        );
    }
}
