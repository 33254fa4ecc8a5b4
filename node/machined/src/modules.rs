//! Kernel modules from the initramfs, loaded in dependency order without modprobe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use talos_node_sys::fs::ModuleLoader;

/// `modules.dep`: module file (relative path) → its dependencies' files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleDeps {
    deps: BTreeMap<String, Vec<String>>,
}

/// Module names treat '-' and '_' alike, as modprobe does.
pub fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

impl ModuleDeps {
    pub fn parse(text: &str) -> Self {
        let deps = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(module, deps)| {
                (
                    module.trim().to_owned(),
                    deps.split_whitespace().map(str::to_owned).collect(),
                )
            })
            .collect();
        Self { deps }
    }

    fn file_of(&self, name: &str) -> Option<&str> {
        let wanted = name.replace('-', "_");
        self.deps
            .keys()
            .find(|f| module_name(f) == wanted)
            .map(String::as_str)
    }

    /// Files to load for `names`, each after its dependencies, each once. Unknown names are
    /// returned separately so the caller can report them.
    pub fn load_order(&self, names: &[String]) -> (Vec<String>, Vec<String>) {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for name in names {
            match self.file_of(name) {
                Some(file) => self.visit(file, &mut seen, &mut order),
                None => missing.push(name.clone()),
            }
        }
        (order, missing)
    }

    /// Every module in the file, in dependency order.
    pub fn all(&self) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for file in self.deps.keys() {
            self.visit(file, &mut seen, &mut order);
        }
        order
    }

    fn visit(&self, file: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(file.to_owned()) {
            return;
        }
        for dep in self.deps.get(file).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(file.to_owned());
    }
}

/// Result of loading modules: what loaded and what failed, for the log.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Loads the modules named in `list_file` (one per line; all of modules.dep if it is absent)
/// from `modules_dir` (`/lib/modules/<release>`).
pub fn load_from_initramfs(
    loader: &dyn ModuleLoader,
    modules_dir: &Path,
    list_file: &Path,
) -> LoadReport {
    let mut report = LoadReport::default();
    let deps = match std::fs::read_to_string(modules_dir.join("modules.dep")) {
        Ok(text) => ModuleDeps::parse(&text),
        Err(e) => {
            report.failed.push((
                "modules.dep".into(),
                format!("{}: {e}", modules_dir.display()),
            ));
            return report;
        }
    };
    let files = match std::fs::read_to_string(list_file) {
        Ok(list) => {
            let names: Vec<String> = list
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            let (order, missing) = deps.load_order(&names);
            for name in missing {
                report
                    .failed
                    .push((name, "not in this initramfs's modules.dep".into()));
            }
            order
        }
        Err(_) => deps.all(),
    };
    for file in files {
        let path: PathBuf = modules_dir.join(&file);
        match loader.load_module(&path) {
            Ok(()) => report.loaded.push(module_name(&file)),
            Err(e) => report.failed.push((module_name(&file), e.to_string())),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_node_sys::fake::{Call, FakeSystem};

    const DEP: &str = "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
kernel/net/core/failover.ko:\n\
kernel/drivers/block/virtio_blk.ko:\n\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
kernel/lib/crc16.ko:\n\
kernel/fs/mbcache.ko:\n\
kernel/fs/jbd2/jbd2.ko:\n\
kernel/crypto/crc32c_generic.ko:\n";

    #[test]
    fn dependencies_come_first_and_once() {
        let deps = ModuleDeps::parse(DEP);
        let (order, missing) = deps.load_order(&[
            "virtio-net".into(),
            "virtio_blk".into(),
            "net_failover".into(),
        ]);
        assert!(missing.is_empty());
        assert_eq!(
            order,
            vec![
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
                "kernel/drivers/block/virtio_blk.ko",
            ]
        );
    }

    #[test]
    fn listed_order_is_kept_between_unrelated_modules() {
        let deps = ModuleDeps::parse(DEP);
        let (order, _) = deps.load_order(&["crc32c_generic".into(), "ext4".into()]);
        assert_eq!(
            order.first().map(String::as_str),
            Some("kernel/crypto/crc32c_generic.ko")
        );
        assert_eq!(
            order.last().map(String::as_str),
            Some("kernel/fs/ext4/ext4.ko")
        );
    }

    #[test]
    fn unknown_modules_are_reported() {
        let deps = ModuleDeps::parse(DEP);
        let (_, missing) = deps.load_order(&["e1000".into()]);
        assert_eq!(missing, vec!["e1000".to_owned()]);
    }

    #[test]
    fn loads_from_a_module_tree_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("modules.dep"), DEP).unwrap();
        let list = dir.path().join("modules.list");
        std::fs::write(&list, "# boot modules\nvirtio_net\nnope\n").unwrap();
        let fake = FakeSystem {
            failing_modules: vec![dir.path().join("kernel/drivers/net/net_failover.ko")],
            ..FakeSystem::default()
        };
        let report = load_from_initramfs(&fake, dir.path(), &list);
        assert_eq!(report.loaded, vec!["failover", "virtio_net"]);
        let failed: Vec<&str> = report.failed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(failed, vec!["nope", "net_failover"]);
        assert_eq!(fake.calls().len(), 3);
        assert!(matches!(&fake.calls()[0], Call::LoadModule(p) if p.ends_with("failover.ko")));
    }
}
