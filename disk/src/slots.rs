//! A/B boot slots on the EFI partition, for two boot chains that share one layout:
//!
//! - UEFI (and U-Boot's UEFI when it can rename files): systemd-boot reads
//!   `loader/entries/talos-<generation>-<slot>[+left[-done]].conf`. It boots the newest
//!   generation whose tries are not used up, and counts a try by renaming the file.
//! - U-Boot: `boot.scr` reads `ab.env` (`talos_active`, `talos_try`). A pending try is
//!   cleared before the slot boots, so any failed boot falls back to `talos_active`.
//!
//! Each slot directory (`/A`, `/B`) holds `vmlinuz`, `initramfs.zst` and `boot.env` (the
//! command line and device tree for U-Boot). The node decides what to write; these
//! functions return the file operations so the logic is testable without a disk.

use std::fmt;

pub const LOADER_CONF: &str = "loader/loader.conf";
pub const ENTRIES_DIR: &str = "loader/entries";
pub const AB_ENV: &str = "ab.env";
pub const BOOT_SCRIPT: &str = "boot.scr";
pub const KERNEL: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.zst";
pub const SLOT_ENV: &str = "boot.env";
/// The kernel argument naming the slot that booted.
pub const SLOT_ARG: &str = "talos.slot";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub fn parse(label: &str) -> Option<Slot> {
        match label {
            "A" | "a" => Some(Slot::A),
            "B" | "b" => Some(Slot::B),
            _ => None,
        }
    }

    pub fn file(self, name: &str) -> String {
        format!("{}/{name}", self.label())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

pub fn loader_conf() -> &'static str {
    "timeout 0\ndefault talos-*\n"
}

/// The U-Boot script: one-shot trial of `talos_try`, else `talos_active`.
pub fn boot_script() -> &'static str {
    concat!(
        "setenv talos_active A\n",
        "setenv talos_try none\n",
        "setenv talos_fdt none\n",
        "if load ${devtype} ${devnum}:${distro_bootpart} ${scriptaddr} /ab.env; then env import -t ${scriptaddr} ${filesize}; fi\n",
        "setenv talos_boot ${talos_active}\n",
        "if test \"${talos_try}\" != \"none\"; then\n",
        "  setenv talos_boot ${talos_try}\n",
        "  setenv talos_try none\n",
        "  env export -t ${scriptaddr} talos_active talos_try\n",
        "  fatwrite ${devtype} ${devnum}:${distro_bootpart} ${scriptaddr} /ab.env ${filesize}\n",
        "fi\n",
        "echo talos: booting slot ${talos_boot}\n",
        "load ${devtype} ${devnum}:${distro_bootpart} ${scriptaddr} /${talos_boot}/boot.env\n",
        "env import -t ${scriptaddr} ${filesize}\n",
        "load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} /${talos_boot}/vmlinuz\n",
        "load ${devtype} ${devnum}:${distro_bootpart} ${ramdisk_addr_r} /${talos_boot}/initramfs.zst\n",
        "setenv talos_initrd ${ramdisk_addr_r}:${filesize}\n",
        "if test \"${talos_fdt}\" != \"none\"; then load ${devtype} ${devnum}:${distro_bootpart} ${fdt_addr_r} /${talos_boot}/${talos_fdt}; setenv fdt_addr ${fdt_addr_r}; else setenv fdt_addr ${fdtcontroladdr}; fi\n",
        "setenv bootargs ${talos_cmdline} talos.slot=${talos_boot}\n",
        "booti ${kernel_addr_r} ${talos_initrd} ${fdt_addr}\n",
        "echo talos: slot ${talos_boot} failed to boot\n",
    )
}

/// `<slot>/boot.env`, read by the U-Boot script.
pub fn slot_env(cmdline: &str, devicetree: Option<&str>) -> String {
    format!(
        "talos_cmdline={cmdline}\ntalos_fdt={}\n",
        devicetree.unwrap_or("none")
    )
}

/// `ab.env`: the committed slot and a pending one-shot trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbEnv {
    pub active: Slot,
    pub trial: Option<Slot>,
}

impl AbEnv {
    pub fn render(&self) -> String {
        format!(
            "talos_active={}\ntalos_try={}\n",
            self.active,
            self.trial.map_or("none", Slot::label)
        )
    }

    /// Tolerates the NUL that U-Boot's `env export -t` appends.
    pub fn parse(text: &str) -> Option<AbEnv> {
        let mut active = None;
        let mut trial = None;
        for line in text.split(['\n', '\0']) {
            match line.split_once('=') {
                Some(("talos_active", v)) => active = Slot::parse(v),
                Some(("talos_try", v)) => trial = Slot::parse(v),
                _ => {}
            }
        }
        Some(AbEnv {
            active: active?,
            trial,
        })
    }
}

/// Boot counting as systemd-boot encodes it in file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    pub left: u32,
    pub done: u32,
}

/// One loader entry file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryName {
    pub generation: u32,
    pub slot: Slot,
    pub tries: Option<Tries>,
}

impl EntryName {
    pub fn parse(file_name: &str) -> Option<EntryName> {
        let stem = file_name.strip_suffix(".conf")?.strip_prefix("talos-")?;
        let (id, counter) = match stem.split_once('+') {
            Some((id, counter)) => (id, Some(counter)),
            None => (stem, None),
        };
        let (generation, slot) = id.split_once('-')?;
        let tries = match counter {
            None => None,
            Some(c) => {
                let (left, done) = c.split_once('-').unwrap_or((c, "0"));
                Some(Tries {
                    left: left.parse().ok()?,
                    done: done.parse().ok()?,
                })
            }
        };
        Some(EntryName {
            generation: generation.parse().ok()?,
            slot: Slot::parse(slot)?,
            tries,
        })
    }

    pub fn file_name(&self) -> String {
        let slot = self.slot.label().to_ascii_lowercase();
        match self.tries {
            None => format!("talos-{}-{slot}.conf", self.generation),
            Some(Tries { left, done: 0 }) => {
                format!("talos-{}-{slot}+{left}.conf", self.generation)
            }
            Some(Tries { left, done }) => {
                format!("talos-{}-{slot}+{left}-{done}.conf", self.generation)
            }
        }
    }

    pub fn path(&self) -> String {
        format!("{ENTRIES_DIR}/{}", self.file_name())
    }

    /// systemd-boot skips entries whose tries are used up.
    pub fn is_bad(&self) -> bool {
        self.tries.is_some_and(|t| t.left == 0)
    }
}

/// What a slot boots: the systemd-boot entry body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotBoot {
    pub version: String,
    pub cmdline: String,
    pub devicetree: Option<String>,
}

impl SlotBoot {
    pub fn entry(&self, slot: Slot) -> String {
        let mut text = format!(
            "title Talos {version} ({slot})\nversion {version}\nlinux /{kernel}\ninitrd /{initrd}\noptions {cmdline} {SLOT_ARG}={slot}\n",
            version = self.version,
            kernel = slot.file(KERNEL),
            initrd = slot.file(INITRAMFS),
            cmdline = self.cmdline,
        );
        if let Some(dtb) = &self.devicetree {
            text.push_str(&format!("devicetree /{}\n", slot.file(dtb)));
        }
        text
    }
}

/// A change to a file on the EFI partition, relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    Write {
        path: String,
        contents: Vec<u8>,
    },
    Rename {
        from: String,
        to: String,
    },
    /// Removes a file; one that does not exist is already removed.
    Remove {
        path: String,
    },
}

/// The loader state as read from the EFI partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub entries: Vec<EntryName>,
    pub ab: Option<AbEnv>,
}

/// What the node learns about the boot it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// The committed slot booted normally.
    Committed,
    /// A new slot on trial: commit it once the node is running.
    Trial,
    /// The trial of the other slot failed and the firmware fell back to this one.
    RolledBack { failed: Slot },
}

impl BootFiles {
    fn newest(&self, slot: Slot) -> Option<&EntryName> {
        self.entries
            .iter()
            .filter(|e| e.slot == slot)
            .max_by_key(|e| e.generation)
    }

    fn next_generation(&self) -> u32 {
        self.entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1
    }

    /// `previous` is META's Upgrade tag: the slot an upgrade started from.
    pub fn classify(&self, booted: Slot, previous: Option<Slot>) -> BootKind {
        match previous {
            Some(p) if p == booted => BootKind::RolledBack {
                failed: booted.other(),
            },
            Some(_) => BootKind::Trial,
            None if self.newest(booted).is_some_and(|e| e.tries.is_some()) => BootKind::Trial,
            None => BootKind::Committed,
        }
    }

    /// Boot `target` once on the next boot; any failure falls back to `booted`.
    pub fn arm_trial(&self, booted: Slot, target: Slot, boot: &SlotBoot) -> Vec<FileOp> {
        let mut ops = self.remove_entries(target);
        let entry = EntryName {
            generation: self.next_generation(),
            slot: target,
            tries: Some(Tries { left: 1, done: 0 }),
        };
        ops.push(FileOp::Write {
            path: entry.path(),
            contents: boot.entry(target).into_bytes(),
        });
        ops.push(write_ab(AbEnv {
            active: booted,
            trial: Some(target),
        }));
        ops
    }

    /// Makes the running slot the one every later boot uses.
    pub fn commit(&self, booted: Slot) -> Vec<FileOp> {
        let mut ops = Vec::new();
        if let Some(entry) = self.newest(booted).filter(|e| e.tries.is_some()) {
            let blessed = EntryName {
                tries: None,
                ..*entry
            };
            ops.push(FileOp::Rename {
                from: entry.path(),
                to: blessed.path(),
            });
        }
        let ab = AbEnv {
            active: booted,
            trial: None,
        };
        if self.ab != Some(ab) {
            ops.push(write_ab(ab));
        }
        ops
    }

    /// Forgets a slot whose trial failed, so neither firmware nor a rollback boots it
    /// again. Removing a file that is already gone is not an error.
    pub fn discard(&self, failed: Slot, booted: Slot) -> Vec<FileOp> {
        let mut ops = self.remove_entries(failed);
        ops.extend(
            [KERNEL, INITRAMFS, SLOT_ENV]
                .iter()
                .map(|f| FileOp::Remove {
                    path: failed.file(f),
                }),
        );
        ops.extend(self.commit(booted));
        ops
    }

    /// Makes `target`, which must hold a working system, the committed slot.
    pub fn switch_to(&self, target: Slot, boot: &SlotBoot) -> Vec<FileOp> {
        let mut ops = self.remove_entries(target);
        let entry = EntryName {
            generation: self.next_generation(),
            slot: target,
            tries: None,
        };
        ops.push(FileOp::Write {
            path: entry.path(),
            contents: boot.entry(target).into_bytes(),
        });
        ops.push(write_ab(AbEnv {
            active: target,
            trial: None,
        }));
        ops
    }

    fn remove_entries(&self, slot: Slot) -> Vec<FileOp> {
        self.entries
            .iter()
            .filter(|e| e.slot == slot)
            .map(|e| FileOp::Remove { path: e.path() })
            .collect()
    }
}

fn write_ab(ab: AbEnv) -> FileOp {
    FileOp::Write {
        path: AB_ENV.to_owned(),
        contents: ab.render().into_bytes(),
    }
}

#[cfg(test)]
mod tests;
