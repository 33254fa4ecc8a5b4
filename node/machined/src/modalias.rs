//! Drivers for present and hotplugged devices, found by modalias in the initramfs's
//! `modules.alias` and loaded with their dependencies, as udev's kmod builtin would. No udev:
//! the kernel's uevents say when a device appears, and nothing else udev does is needed here
//! (device nodes come from devtmpfs, names from the kernel).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use talos_node_sys::SysError;
use talos_node_sys::fs::ModuleLoader;

use crate::modules::{ModuleDeps, module_name};

/// `modules.alias`: glob patterns over modalias strings, each naming a module.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AliasTable {
    entries: Vec<(String, String)>,
}

impl AliasTable {
    pub fn parse(text: &str) -> AliasTable {
        let entries = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "alias").then_some(())?;
                Some((words.next()?.to_owned(), words.next()?.replace('-', "_")))
            })
            .collect();
        AliasTable { entries }
    }

    /// The modules whose aliases match `modalias`, each once, in file order.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for (pattern, module) in &self.entries {
            if glob_match(pattern.as_bytes(), modalias.as_bytes()) && !found.contains(module) {
                found.push(module.clone());
            }
        }
        found
    }
}

/// fnmatch(3) without flags: `*`, `?` and `[...]` classes with ranges and `!`/`^`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            match class_match(rest, c) {
                Some((matched, after)) => matched && glob_match(after, text_rest),
                None => c == b'[' && glob_match(rest, text_rest),
            }
        }
        Some((&p, rest)) => text.first() == Some(&p) && glob_match(rest, &text[1..]),
    }
}

/// Matches `c` against the class that starts after `[`; the rest of the pattern after `]`.
fn class_match(class: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negated, mut body) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        match body {
            [] => return None,
            [b']', rest @ ..] if !first => return Some((matched != negated, rest)),
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                matched |= (*lo..=*hi).contains(&c);
                body = rest;
            }
            [x, rest @ ..] => {
                matched |= *x == c;
                body = rest;
            }
        }
        first = false;
    }
}

/// The modalias of every device below `devices` (e.g. /sys/devices), not following links.
pub fn present(devices: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![devices.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && entry.file_name() == "modalias"
                && let Ok(text) = std::fs::read_to_string(entry.path())
                && !text.trim().is_empty()
            {
                found.push(text.trim().to_owned());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Loads drivers by modalias from one module tree.
#[derive(Debug)]
pub struct Drivers {
    modules_dir: PathBuf,
    deps: ModuleDeps,
    aliases: AliasTable,
}

impl Drivers {
    /// The tree's `modules.dep` and `modules.alias`; None when the image carries no aliases.
    pub fn open(modules_dir: &Path) -> Option<Drivers> {
        let aliases = std::fs::read_to_string(modules_dir.join("modules.alias")).ok()?;
        let deps = std::fs::read_to_string(modules_dir.join("modules.dep")).ok()?;
        Some(Drivers {
            modules_dir: modules_dir.to_owned(),
            deps: ModuleDeps::parse(&deps),
            aliases: AliasTable::parse(&aliases),
        })
    }

    /// Loads what the devices with these modaliases need; already loaded modules are fine.
    /// Returns the modules newly loaded and the failures.
    pub fn load_for(
        &self,
        loader: &dyn ModuleLoader,
        modaliases: &[String],
    ) -> (Vec<String>, Vec<(String, SysError)>) {
        let wanted: BTreeSet<String> = modaliases
            .iter()
            .flat_map(|m| self.aliases.modules_for(m))
            .collect();
        let (files, _) = self
            .deps
            .load_order(&wanted.into_iter().collect::<Vec<_>>());
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        for file in files {
            match loader.load_module(&self.modules_dir.join(&file)) {
                Ok(()) => loaded.push(module_name(&file)),
                Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => failed.push((module_name(&file), e)),
            }
        }
        (loaded, failed)
    }
}

/// Loads drivers for the devices present now, then for each device the kernel announces, on a
/// thread of its own for as long as machined runs.
pub fn coldplug_and_watch(modules_dir: &Path) {
    let Some(drivers) = Drivers::open(modules_dir) else {
        tracing::debug!("no modules.alias in this image: no drivers are loaded on demand");
        return;
    };
    let linux = talos_node_sys::fs::Linux;
    // Subscribed before the scan, so a device that appears during it is not missed.
    let socket = talos_node_sys::uevent::UeventSocket::open();
    report(drivers.load_for(&linux, &present(Path::new("/sys/devices"))));
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("hotplugged devices will get no drivers: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        loop {
            match socket.next() {
                Ok(event) => {
                    let field = |key: &str| event.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                    if let (Some(action), Some(modalias)) = (field("ACTION"), field("MODALIAS"))
                        && action == "add"
                    {
                        report(drivers.load_for(&linux, std::slice::from_ref(modalias)));
                    }
                }
                Err(e) => {
                    tracing::error!("reading uevents: {e}");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    });
}

fn report((loaded, failed): (Vec<String>, Vec<(String, SysError)>)) {
    if !loaded.is_empty() {
        tracing::info!("loaded drivers for devices: {}", loaded.join(" "));
    }
    for (module, e) in failed {
        tracing::warn!(module, "driver not loaded: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use talos_node_sys::fake::{Call, FakeSystem};

    const ALIASES: &str = "\
# Aliases extracted from modules themselves.
alias usb:v0B95p1790d*dc*dsc*dp*ic*isc*ip*in* ax88179_178a
alias usb:v*p*d*dc*dsc*dp*ic02isc06ip00in* cdc_ether
alias usb:v0BDAp8152d[2-9]*dc*dsc*dp*icFFisc*ip*in* r8152
alias of:N*T*Cbrcm,bcm2711-genet-v5C* genet
alias of:N*T*Cbrcm,bcm2711-genet-v5 genet
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio-net
";

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob_match(b"a*c", b"abbbc"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"d[2-9]*", b"d3000"));
        assert!(!glob_match(b"d[2-9]*", b"d1000"));
        assert!(glob_match(b"x[!a]y", b"xby"));
        assert!(!glob_match(b"x[!a]y", b"xay"));
        assert!(glob_match(b"[]]", b"]"));
        assert!(glob_match(b"a[", b"a["));
    }

    #[test]
    fn finds_modules_by_modalias() {
        let table = AliasTable::parse(ALIASES);
        assert_eq!(
            table.modules_for("usb:v0525pA4A2d0333dc02dsc00dp00ic02isc06ip00in00"),
            ["cdc_ether"]
        );
        assert_eq!(
            table.modules_for("usb:v0BDAp8152d3000dc00dsc00dp00icFFisc00ip00in00"),
            ["r8152"]
        );
        assert_eq!(
            table.modules_for("of:NethernetT(null)Cbrcm,bcm2711-genet-v5"),
            ["genet"]
        );
        assert_eq!(
            table.modules_for("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_net"]
        );
        assert!(
            table
                .modules_for("usb:v1D6Bp0002d0601dc09dsc00dp01ic09isc00ip00in00")
                .is_empty()
        );
    }

    #[test]
    fn loads_matching_drivers_with_their_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("modules.alias"), ALIASES).unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/drivers/net/usb/cdc_ether.ko: kernel/drivers/net/usb/usbnet.ko kernel/drivers/net/mii.ko\n\
kernel/drivers/net/usb/usbnet.ko: kernel/drivers/net/mii.ko\n\
kernel/drivers/net/mii.ko:\n",
        )
        .unwrap();
        let devices = dir.path().join("devices/platform/usb1/1-1");
        std::fs::create_dir_all(&devices).unwrap();
        std::fs::write(
            devices.join("modalias"),
            "usb:v0525pA4A2d0333dc02dsc00dp00ic02isc06ip00in00\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path().join("devices"), devices.join("loop")).unwrap();
        let present = present(&dir.path().join("devices"));
        assert_eq!(present.len(), 1);
        let drivers = Drivers::open(dir.path()).unwrap();
        let fake = FakeSystem::default();
        let (loaded, failed) = drivers.load_for(&fake, &present);
        assert!(failed.is_empty());
        assert_eq!(loaded, ["mii", "usbnet", "cdc_ether"]);
        let calls = fake.calls();
        assert_eq!(
            calls.last(),
            Some(&Call::LoadModule(
                dir.path().join("kernel/drivers/net/usb/cdc_ether.ko")
            ))
        );
        assert!(Drivers::open(&dir.path().join("devices")).is_none());
    }
}
