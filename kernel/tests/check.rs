//! The checker on small inputs and on the Debian kernels' real configs.

use std::path::PathBuf;

use talos_kernel::{
    Fragment, FragmentKind, KernelArch, KernelConfig, KernelError, Status, Value, check, fragments,
};

const CONFIG: &str = "\
CONFIG_ARM64=y
CONFIG_CGROUPS=y
CONFIG_EXT4_FS=m
# CONFIG_DEVMEM is not set
CONFIG_PROC_KCORE=y
CONFIG_DEFAULT_MMAP_MIN_ADDR=4096
";

fn fragment(kind: FragmentKind, text: &str) -> Fragment {
    Fragment::parse("t.config", kind, text).expect("fragment parses")
}

#[test]
fn builtin_module_and_unset_semantics() {
    let config = KernelConfig::parse("c", CONFIG).expect("config");
    assert_eq!(config.arch(), Some(KernelArch::Arm64));
    let required = fragment(
        FragmentKind::Required,
        "CONFIG_CGROUPS=y\nCONFIG_EXT4_FS=y\nCONFIG_VETH=y\nCONFIG_CGROUPS=m\n",
    );
    let report = check(&config, &[required]);
    let statuses: Vec<Status> = report.rows.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Status::Ok, Status::AsModule, Status::Missing, Status::Ok]
    );
    let missing: Vec<&str> = report
        .missing_required()
        .map(|r| r.option.as_str())
        .collect();
    assert_eq!(missing, ["CONFIG_VETH"]);
    let table = report.table();
    assert!(table.contains("present as a module"), "{table}");
    assert!(
        table.contains("CONFIG_VETH") && table.contains("MISSING"),
        "{table}"
    );
}

#[test]
fn hardening_gaps_are_reported_per_architecture() {
    let config = KernelConfig::parse("c", CONFIG).expect("config");
    let hardening = fragment(
        FragmentKind::Hardening,
        "# CONFIG_DEVMEM is not set\n# CONFIG_PROC_KCORE is not set\n# CONFIG_HIBERNATION is not set\n\
         # [arm64]\nCONFIG_DEFAULT_MMAP_MIN_ADDR=32768\n# [x86_64]\nCONFIG_X86_UMIP=y\n",
    );
    let report = check(&config, &[hardening]);
    let gaps: Vec<(&str, String)> = report
        .hardening_gaps()
        .map(|r| (r.option.as_str(), r.found.to_string()))
        .collect();
    assert_eq!(
        gaps,
        [
            ("CONFIG_PROC_KCORE", "y".to_owned()),
            ("CONFIG_DEFAULT_MMAP_MIN_ADDR", "4096".to_owned())
        ]
    );
    assert_eq!(report.missing_required().count(), 0);
    assert!(!report.rows.iter().any(|r| r.option == "CONFIG_X86_UMIP"));
    assert_eq!(
        report.rows[2].found,
        Value::NotSet,
        "absent counts as not set"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    match KernelConfig::parse("cfg", "CONFIG_A=y\nCONFIG_A-B=y\n") {
        Err(err @ KernelError::Syntax { line: 2, .. }) => {
            assert!(err.to_string().contains("cfg, line 2"), "{err}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(KernelConfig::parse("cfg", "NOT_A_CONFIG\n").is_err());
}

#[test]
fn builtin_fragments_parse_and_hold_the_key_options() {
    let all = fragments();
    let names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["machined.config", "containers.config", "hardening.config"]
    );
    let has =
        |fragment: usize, option: &str| all[fragment].entries.iter().any(|e| e.option == option);
    assert!(has(0, "CONFIG_DEVTMPFS"));
    for option in [
        "CONFIG_OVERLAY_FS",
        "CONFIG_SQUASHFS",
        "CONFIG_VETH",
        "CONFIG_BRIDGE",
        "CONFIG_NETFILTER",
        "CONFIG_MEMCG",
        "CONFIG_USER_NS",
    ] {
        assert!(has(1, option), "{option}");
    }
    assert!(has(2, "CONFIG_STACKPROTECTOR_STRONG"));
    assert_eq!(all[2].kind, FragmentKind::Hardening);
}

fn debian_config(arch: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("TALOS_RS_CACHE").map_or_else(
        || {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/talos-rs")
        },
        PathBuf::from,
    );
    let root = cache.join("kernels").join(arch);
    let release = std::fs::read_to_string(root.join("release")).ok()?;
    Some(root.join("boot").join(format!("config-{}", release.trim())))
}

#[test]
fn debian_kernels_have_every_required_option() {
    for (arch, expected) in [("arm64", KernelArch::Arm64), ("amd64", KernelArch::X86_64)] {
        let Some(path) = debian_config(arch) else {
            println!("skipped {arch}: no kernel in the cache (run `cargo xtask deps`)");
            continue;
        };
        let config = KernelConfig::read(&path).expect("Debian config parses");
        let report = check(&config, &fragments());
        assert_eq!(report.arch, Some(expected));
        let missing: Vec<&str> = report
            .missing_required()
            .map(|r| r.option.as_str())
            .collect();
        assert!(
            missing.is_empty(),
            "{arch}: {missing:?}\n{}",
            report.table()
        );
        // Debian builds ext4 and overlayfs as modules: present, and said so.
        let ext4 = report
            .rows
            .iter()
            .find(|r| r.option == "CONFIG_EXT4_FS")
            .expect("ext4 row");
        assert_eq!(ext4.status, Status::AsModule);
        // Debian does not force module signatures: a known hardening gap.
        assert!(
            report
                .hardening_gaps()
                .any(|r| r.option == "CONFIG_MODULE_SIG_FORCE")
        );
    }
}
