use std::process::Command;

use talos_disk::gpt::Table;

use super::*;

fn spec() -> DiskImageSpec {
    DiskImageSpec {
        seed: "talos-image-disk/test".into(),
        uboot_arch: UbootArch::Arm64,
        first_offset: MIB,
        system: SlotContents {
            kernel: vec![0x4b; 3 * MIB as usize + 17],
            initramfs: vec![0x49; 700_000],
            devicetree: Some(("board.dtb".into(), vec![0xd0; 1000])),
            boot: SlotBoot {
                version: "v1.0.0".into(),
                cmdline: "console=ttyAMA0 panic=10".into(),
                devicetree: Some("board.dtb".into()),
            },
        },
        boot_files: vec![("EFI/BOOT/BOOTAA64.EFI".into(), b"systemd-boot".to_vec())],
        raw: vec![(32 * 1024, b"bootloader".to_vec())],
        hybrid_mbr: false,
        gpt_entries: talos_disk::gpt::DEFAULT_ENTRIES,
    }
}

fn mtype(image: &Path, offset: u64, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("mtype")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(format!("::/{path}"))
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[test]
fn builds_a_reproducible_image_that_other_tools_read() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    let mut calls = 0;
    let report = build(&spec(), &a, &mut |done, total| {
        assert!(done <= total);
        calls += 1;
    })
    .unwrap();
    assert!(calls > 3);
    build(&spec(), &b, &mut |_, _| {}).unwrap();
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "same inputs, same bytes"
    );

    let mut file = File::open(&a).unwrap();
    assert_eq!(file.metadata().unwrap().len(), report.size);
    let table = Table::read_from(&mut file).unwrap();
    let efi = table.find(layout::EFI).unwrap().clone();
    assert_eq!(efi.len(), report.efi_size);

    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(&bytes[32 * 1024..32 * 1024 + 10], b"bootloader");
    let meta = table.find(layout::META).unwrap();
    let area = &bytes[meta.offset() as usize..][..talos_disk::adv::AREA_SIZE];
    assert_eq!(Meta::decode(area).unwrap(), Meta::default());
    assert_eq!(&area[..4], [0x5a, 0x4b, 0x3c, 0x2d]);
    let names: Vec<&str> = table.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [layout::EFI, layout::META], "the node adds STATE");

    let Some(entry) = mtype(&a, efi.offset(), "loader/entries/talos-1-a.conf") else {
        eprintln!("mtools is not installed; reading the EFI partition back skipped");
        return;
    };
    let entry = String::from_utf8(entry).unwrap();
    assert!(entry.contains("linux /A/vmlinuz\n"), "{entry}");
    assert!(
        entry.contains("options console=ttyAMA0 panic=10 talos.slot=A\n"),
        "{entry}"
    );
    assert_eq!(
        mtype(&a, efi.offset(), "A/vmlinuz").unwrap(),
        spec().system.kernel
    );
    assert_eq!(
        mtype(&a, efi.offset(), "A/board.dtb").unwrap(),
        vec![0xd0; 1000]
    );
    assert_eq!(
        mtype(&a, efi.offset(), "ab.env").unwrap(),
        b"talos_active=A\ntalos_try=none\n"
    );
    assert_eq!(
        mtype(&a, efi.offset(), "A/boot.env").unwrap(),
        b"talos_cmdline=console=ttyAMA0 panic=10\ntalos_fdt=board.dtb\n"
    );
    assert_eq!(
        mtype(&a, efi.offset(), "EFI/BOOT/BOOTAA64.EFI").unwrap(),
        b"systemd-boot"
    );
    let script = mtype(&a, efi.offset(), "boot.scr").unwrap();
    assert_eq!(&script[..4], [0x27, 0x05, 0x19, 0x56]);
}

#[test]
fn a_short_gpt_leaves_room_for_a_bootloader_at_8_kib() {
    let dir = tempfile::tempdir().unwrap();
    let mut allwinner = spec();
    allwinner.raw = vec![(8 * 1024, b"spl".to_vec())];
    let path = dir.path().join("a.raw");
    let err = build(&allwinner, &path, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("ends at 17408"), "{err}");
    allwinner.gpt_entries = 56;
    build(&allwinner, &path, &mut |_, _| {}).unwrap();
    let table = Table::read_from(&mut File::open(&path).unwrap()).unwrap();
    assert_eq!(table.entry_count, 56);
    assert_eq!(&std::fs::read(&path).unwrap()[8192..8195], b"spl");
}

#[test]
fn raw_bootloaders_may_not_overlap_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = spec();
    bad.raw = vec![(MIB - 4, vec![0; 8])];
    let err = build(&bad, &dir.path().join("x.raw"), &mut |_, _| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "raw bootloader at byte 1048572 (8 bytes) must lie between the GPT (ends at 17408) and the first partition (1048576)"
    );
}

#[test]
fn hybrid_mbr_images_have_a_fat32_efi_partition() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, hybrid) = (dir.path().join("plain.raw"), dir.path().join("hybrid.raw"));
    build(&spec(), &plain, &mut |_, _| {}).unwrap();
    let pi = DiskImageSpec {
        hybrid_mbr: true,
        gpt_entries: talos_disk::gpt::DEFAULT_ENTRIES,
        ..spec()
    };
    let report = build(&pi, &hybrid, &mut |_, _| {}).unwrap();

    let bytes = std::fs::read(&hybrid).unwrap();
    let efi = Table::read_from(&mut File::open(&hybrid).unwrap())
        .unwrap()
        .find(layout::EFI)
        .unwrap()
        .clone();
    assert_eq!(efi.len(), report.efi_size);
    // MBR entry 1: FAT32 (LBA) over the GPT's EFI partition.
    let entry = &bytes[446..462];
    assert_eq!(entry[4], 0x0C);
    assert_eq!(
        u32::from_le_bytes(entry[8..12].try_into().unwrap()),
        efi.first_lba as u32
    );
    assert_eq!(&bytes[efi.offset() as usize + 82..][..8], b"FAT32   ");
    // Without the setting: a protective MBR, and the FAT type fatfs picks for the size.
    let plain = std::fs::read(&plain).unwrap();
    assert_eq!(plain[446 + 4], 0xEE);
    assert_eq!(&plain[efi.offset() as usize + 54..][..8], b"FAT16   ");

    if let Some(script) = mtype(&hybrid, efi.offset(), "boot.scr") {
        assert_eq!(&script[..4], [0x27, 0x05, 0x19, 0x56]);
        assert_eq!(
            mtype(&hybrid, efi.offset(), "A/vmlinuz").unwrap(),
            spec().system.kernel
        );
    }
}
