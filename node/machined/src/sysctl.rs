//! Kernel parameters from the board's memory profile (`/etc/talos/sysctl.conf`, `name = value`
//! lines), written to /proc/sys at boot.

use std::path::Path;

/// The image's settings.
pub const SYSCTL_FILE: &str = "/etc/talos/sysctl.conf";

/// `(name, value)` pairs; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut settings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "{SYSCTL_FILE} line {}: expected name = value: {line:?}",
                n + 1
            ));
        };
        let name = name.trim();
        if name.is_empty() || name.split('.').any(|p| p.is_empty() || p == "..") {
            return Err(format!("{SYSCTL_FILE} line {}: bad name {name:?}", n + 1));
        }
        settings.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(settings)
}

/// Writes each setting below `proc_sys`; the failures, each naming its setting.
pub fn apply(proc_sys: &Path, settings: &[(String, String)]) -> Vec<String> {
    settings
        .iter()
        .filter_map(|(name, value)| {
            let path = proc_sys.join(name.replace('.', "/"));
            std::fs::write(&path, value)
                .err()
                .map(|e| format!("{name} = {value}: {}: {e}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_below_proc_sys() {
        let settings = parse("# small\nvm.overcommit_memory = 1\n\nkernel.panic=10\n").unwrap();
        assert_eq!(
            settings,
            [
                ("vm.overcommit_memory".to_owned(), "1".to_owned()),
                ("kernel.panic".to_owned(), "10".to_owned())
            ]
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("vm")).unwrap();
        let failed = apply(root.path(), &settings);
        assert_eq!(
            std::fs::read_to_string(root.path().join("vm/overcommit_memory")).unwrap(),
            "1"
        );
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("kernel.panic = 10: "), "{failed:?}");
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            parse("vm.swappiness 10\n").unwrap_err(),
            "/etc/talos/sysctl.conf line 1: expected name = value: \"vm.swappiness 10\""
        );
        assert_eq!(
            parse("vm..x = 1\n").unwrap_err(),
            "/etc/talos/sysctl.conf line 1: bad name \"vm..x\""
        );
    }
}
