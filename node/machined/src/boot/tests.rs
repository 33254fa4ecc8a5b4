use super::*;

/// An EFI partition as the image builder lays it out, and an empty META.
fn fresh(dir: &Path, booted: Slot) -> BootSlots {
    let root = dir.join("efi");
    let write = |path: &str, data: &str| {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    write("loader/entries/talos-1-a.conf", "title A\n");
    write("ab.env", "talos_active=A\ntalos_try=none\n");
    write("A/vmlinuz", "kernel v1");
    write("A/initramfs.zst", "initramfs v1");
    write(
        "A/boot.env",
        "talos_cmdline=console=ttyAMA0 panic=10\ntalos_fdt=none\n",
    );
    let meta = dir.join("meta");
    std::fs::write(&meta, vec![0u8; adv::PARTITION_SIZE as usize]).unwrap();
    let disk = SystemDisk {
        disk: dir.join("disk"),
        efi: dir.join("efi-dev"),
        meta,
    };
    BootSlots::new(disk, booted, root)
}

fn read(slots: &BootSlots, path: &str) -> String {
    std::fs::read_to_string(slots.root.join(path)).unwrap_or_default()
}

fn entries(slots: &BootSlots) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(slots.root.join(slots::ENTRIES_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn upgrade_arms_a_one_shot_trial_of_the_other_slot() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh(dir.path(), Slot::A);
    assert_eq!(a.on_boot().unwrap(), BootKind::Committed);
    assert_eq!(
        a.stage_upgrade(b"kernel v2", b"initramfs v2", "v2")
            .unwrap(),
        Slot::B
    );
    assert_eq!(read(&a, "B/vmlinuz"), "kernel v2");
    assert_eq!(
        read(&a, "B/boot.env"),
        "talos_cmdline=console=ttyAMA0 panic=10\ntalos_fdt=none\n"
    );
    assert_eq!(entries(&a), ["talos-1-a.conf", "talos-2-b+1.conf"]);
    let entry = read(&a, "loader/entries/talos-2-b+1.conf");
    assert!(
        entry.contains("options console=ttyAMA0 panic=10 talos.slot=B\n"),
        "{entry}"
    );
    assert_eq!(read(&a, "ab.env"), "talos_active=A\ntalos_try=B\n");
    assert_eq!(
        BootSlots::upgrade_tag(&a.read_meta().unwrap()),
        Some(Slot::A)
    );

    // systemd-boot counts the try; slot B comes up and commits.
    std::fs::rename(
        a.root.join("loader/entries/talos-2-b+1.conf"),
        a.root.join("loader/entries/talos-2-b+0-1.conf"),
    )
    .unwrap();
    let b = BootSlots::new(a.disk.clone(), Slot::B, a.root.clone());
    assert_eq!(b.on_boot().unwrap(), BootKind::Trial);
    b.commit().unwrap();
    assert_eq!(entries(&b), ["talos-1-a.conf", "talos-2-b.conf"]);
    assert_eq!(read(&b, "ab.env"), "talos_active=B\ntalos_try=none\n");
    assert_eq!(b.read_meta().unwrap(), Meta::default());
    assert_eq!(b.on_boot().unwrap(), BootKind::Committed);
}

#[test]
fn a_failed_trial_is_noticed_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh(dir.path(), Slot::A);
    a.stage_upgrade(b"broken", b"broken", "v3").unwrap();
    // U-Boot consumed the try and slot B never came up; slot A booted again.
    std::fs::write(a.root.join("ab.env"), "talos_active=A\ntalos_try=none\n\0").unwrap();
    assert_eq!(
        a.on_boot().unwrap(),
        BootKind::RolledBack { failed: Slot::B }
    );
    assert_eq!(entries(&a), ["talos-1-a.conf"]);
    assert!(
        !a.root.join("B/vmlinuz").exists(),
        "the broken system is gone"
    );
    assert_eq!(a.read_meta().unwrap(), Meta::default());
    let err = a.switch_to_other().unwrap_err();
    assert_eq!(err.to_string(), "slot B holds no system to switch to");
    assert_eq!(a.on_boot().unwrap(), BootKind::Committed);
}

#[test]
fn rollback_switches_to_the_other_slot_only_when_it_holds_a_system() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh(dir.path(), Slot::A);
    let err = a.switch_to_other().unwrap_err();
    assert_eq!(err.to_string(), "slot B holds no system to switch to");
    a.stage_upgrade(b"kernel v2", b"initramfs v2", "v2")
        .unwrap();
    let b = BootSlots::new(a.disk.clone(), Slot::B, a.root.clone());
    b.commit().unwrap();
    assert_eq!(b.switch_to_other().unwrap(), Slot::A);
    assert_eq!(entries(&b), ["talos-2-b.conf", "talos-3-a.conf"]);
    assert_eq!(read(&b, "ab.env"), "talos_active=A\ntalos_try=none\n");
}

#[test]
fn finds_partitions_by_their_start_sector() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys/block");
    for (part, start) in [("vda1", 2048), ("vda2", 215040)] {
        std::fs::create_dir_all(sys.join("vda").join(part)).unwrap();
        std::fs::write(
            sys.join("vda").join(part).join("start"),
            format!("{start}\n"),
        )
        .unwrap();
    }
    let dev = Path::new("/dev");
    assert_eq!(
        partition_device(&sys, dev, "vda", 215040),
        Some(PathBuf::from("/dev/vda2"))
    );
    assert_eq!(partition_device(&sys, dev, "vda", 7), None);
}

#[test]
fn a_reset_empties_meta_and_keeps_the_running_slot() {
    let dir = tempfile::tempdir().unwrap();
    let a = fresh(dir.path(), Slot::A);
    a.stage_upgrade(b"kernel v2", b"initramfs v2", "v2")
        .unwrap();
    let b = BootSlots::new(a.disk.clone(), Slot::B, a.root.clone());
    b.wipe_meta().unwrap();
    assert_eq!(b.read_meta().unwrap(), Meta::default());
    assert_eq!(read(&b, "ab.env"), "talos_active=B\ntalos_try=none\n");
    assert_eq!(b.on_boot().unwrap(), BootKind::Committed);
}

#[test]
fn meta_keys_are_written_and_deleted_on_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let slots = fresh(dir.path(), Slot::A);
    slots.meta_write(0x0b, b"rack-7").unwrap();
    assert_eq!(slots.meta_text(0x0b).as_deref(), Some("rack-7"));
    // Another view of the same partition, as after a reboot.
    let reopened = BootSlots::new(slots.disk.clone(), Slot::A, slots.root.clone());
    assert_eq!(reopened.meta_text(0x0b).as_deref(), Some("rack-7"));
    assert!(matches!(
        slots.meta_write(3, b"x"),
        Err(BootError::Meta(adv::AdvError::ReservedTag(3)))
    ));
    assert!(reopened.meta_delete(0x0b).unwrap());
    assert!(!slots.meta_delete(0x0b).unwrap());
    assert_eq!(slots.meta_text(0x0b), None);
}
