use super::*;

fn boot() -> SlotBoot {
    SlotBoot {
        version: "v2".into(),
        cmdline: "console=ttyAMA0 panic=10".into(),
        devicetree: None,
    }
}

fn name(generation: u32, slot: Slot, tries: Option<(u32, u32)>) -> EntryName {
    EntryName {
        generation,
        slot,
        tries: tries.map(|(left, done)| Tries { left, done }),
    }
}

#[test]
fn entry_names_round_trip_as_systemd_boot_renames_them() {
    for (file, entry) in [
        ("talos-1-a.conf", name(1, Slot::A, None)),
        ("talos-2-b+1.conf", name(2, Slot::B, Some((1, 0)))),
        ("talos-2-b+0-1.conf", name(2, Slot::B, Some((0, 1)))),
    ] {
        assert_eq!(EntryName::parse(file), Some(entry), "{file}");
        assert_eq!(entry.file_name(), file);
    }
    for junk in [
        "talos-x-a.conf",
        "talos-1-c.conf",
        "other.conf",
        "talos-1-a+z.conf",
        "talos-1-a",
    ] {
        assert_eq!(EntryName::parse(junk), None, "{junk}");
    }
    assert!(name(2, Slot::B, Some((0, 1))).is_bad());
    assert!(!name(2, Slot::B, Some((1, 0))).is_bad());
}

#[test]
fn ab_env_parses_what_uboot_exports() {
    let exported = "talos_active=A\ntalos_try=none\n\0";
    assert_eq!(
        AbEnv::parse(exported),
        Some(AbEnv {
            active: Slot::A,
            trial: None
        })
    );
    let armed = AbEnv {
        active: Slot::A,
        trial: Some(Slot::B),
    };
    assert_eq!(AbEnv::parse(&armed.render()), Some(armed));
    assert_eq!(AbEnv::parse("talos_try=B\n"), None);
}

#[test]
fn entry_body_names_the_slot_files_and_the_slot_argument() {
    let mut b = boot();
    b.devicetree = Some("bcm2837-rpi-3-b.dtb".into());
    assert_eq!(
        b.entry(Slot::B),
        "title Talos v2 (B)\nversion v2\nlinux /B/vmlinuz\ninitrd /B/initramfs.zst\n\
         options console=ttyAMA0 panic=10 talos.slot=B\ndevicetree /B/bcm2837-rpi-3-b.dtb\n"
    );
}

/// Applies operations to an in-memory directory, as the node does on the EFI partition.
fn apply(files: &mut BootFiles, ops: &[FileOp]) {
    for op in ops {
        match op {
            FileOp::Write { path, contents } => {
                if path == AB_ENV {
                    files.ab = AbEnv::parse(std::str::from_utf8(contents).unwrap());
                } else {
                    let e = EntryName::parse(path.rsplit('/').next().unwrap()).unwrap();
                    files.entries.retain(|x| x.path() != *path);
                    files.entries.push(e);
                }
            }
            FileOp::Rename { from, to } => {
                let e = files
                    .entries
                    .iter_mut()
                    .find(|e| e.path() == *from)
                    .unwrap();
                *e = EntryName::parse(to.rsplit('/').next().unwrap()).unwrap();
            }
            FileOp::Remove { path } => files.entries.retain(|e| e.path() != *path),
        }
    }
}

fn step(files: &mut BootFiles, plan: impl Fn(&BootFiles) -> Vec<FileOp>) {
    let ops = plan(files);
    apply(files, &ops);
}

/// What systemd-boot picks: the newest generation whose tries are not used up, counting
/// the try by renaming.
fn systemd_boot(files: &mut BootFiles) -> Slot {
    let pick = *files
        .entries
        .iter()
        .filter(|e| !e.is_bad())
        .max_by_key(|e| e.generation)
        .unwrap();
    if let Some(t) = pick.tries {
        let counted = EntryName {
            tries: Some(Tries {
                left: t.left - 1,
                done: t.done + 1,
            }),
            ..pick
        };
        let i = files.entries.iter().position(|e| *e == pick).unwrap();
        files.entries[i] = counted;
    }
    pick.slot
}

/// What boot.scr does with ab.env.
fn uboot(files: &mut BootFiles) -> Slot {
    let ab = files.ab.unwrap();
    match ab.trial {
        Some(t) => {
            files.ab = Some(AbEnv {
                active: ab.active,
                trial: None,
            });
            t
        }
        None => ab.active,
    }
}

fn fresh() -> BootFiles {
    BootFiles {
        entries: vec![name(1, Slot::A, None)],
        ab: Some(AbEnv {
            active: Slot::A,
            trial: None,
        }),
    }
}

#[test]
fn good_upgrade_is_committed_under_both_boot_chains() {
    for firmware in [systemd_boot as fn(&mut BootFiles) -> Slot, uboot] {
        let mut files = fresh();
        step(&mut files, |f| f.arm_trial(Slot::A, Slot::B, &boot()));
        assert_eq!(firmware(&mut files), Slot::B);
        assert_eq!(files.classify(Slot::B, Some(Slot::A)), BootKind::Trial);
        step(&mut files, |f| f.commit(Slot::B));
        for _ in 0..3 {
            assert_eq!(firmware(&mut files), Slot::B, "{files:?}");
        }
        assert_eq!(files.classify(Slot::B, None), BootKind::Committed);
    }
}

#[test]
fn failed_trial_falls_back_and_is_discarded() {
    for firmware in [systemd_boot as fn(&mut BootFiles) -> Slot, uboot] {
        let mut files = fresh();
        step(&mut files, |f| f.arm_trial(Slot::A, Slot::B, &boot()));
        assert_eq!(firmware(&mut files), Slot::B);
        // B never commits: the next boot goes back to A.
        assert_eq!(firmware(&mut files), Slot::A);
        assert_eq!(
            files.classify(Slot::A, Some(Slot::A)),
            BootKind::RolledBack { failed: Slot::B }
        );
        step(&mut files, |f| f.discard(Slot::B, Slot::A));
        assert_eq!(files.entries, [name(1, Slot::A, None)]);
        assert_eq!(firmware(&mut files), Slot::A);
    }
}

#[test]
fn manual_switch_and_a_second_upgrade_reuse_the_slots() {
    for firmware in [systemd_boot as fn(&mut BootFiles) -> Slot, uboot] {
        let mut files = fresh();
        step(&mut files, |f| f.arm_trial(Slot::A, Slot::B, &boot()));
        firmware(&mut files);
        step(&mut files, |f| f.commit(Slot::B));
        step(&mut files, |f| f.switch_to(Slot::A, &boot()));
        assert_eq!(firmware(&mut files), Slot::A);
        step(&mut files, |f| f.arm_trial(Slot::A, Slot::B, &boot()));
        assert_eq!(firmware(&mut files), Slot::B);
        step(&mut files, |f| f.commit(Slot::B));
        assert_eq!(firmware(&mut files), Slot::B);
        assert_eq!(files.entries.len(), 2, "{files:?}");
    }
}
