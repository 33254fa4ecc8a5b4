use std::io::Cursor;
use std::process::Command;

use super::*;
use crate::layout::{self, SystemDisk};

/// An image's table completed with STATE (and no room for EPHEMERAL), as on an installed disk.
fn with_state(seed: &str, first_offset: u64, efi_size: u64) -> SystemDisk {
    let mut disk = SystemDisk::new(seed, first_offset, efi_size);
    let sectors = disk.table.total_sectors + layout::STATE_SIZE / SECTOR;
    disk.table = layout::complete(&disk.table, sectors).unwrap();
    disk
}

fn image() -> Vec<u8> {
    let disk = with_state("talos-image-disk", 1 << 20, 64 << 20);
    let mut buf = Cursor::new(vec![0u8; disk.size() as usize]);
    disk.table.write_to(&mut buf).unwrap();
    buf.into_inner()
}

#[test]
fn round_trips() {
    let disk = with_state("talos-image-disk", 10 << 20, 64 << 20);
    let mut buf = Cursor::new(vec![0u8; disk.size() as usize]);
    disk.table.write_to(&mut buf).unwrap();
    assert_eq!(Table::read_from(&mut buf).unwrap(), disk.table);
}

#[test]
fn guids_print_in_text_order_and_store_mixed_endian() {
    assert_eq!(
        Guid::ESP.to_string(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!(Guid::ESP.to_disk()[..4], [0x28, 0x73, 0x2A, 0xC1]);
    assert_eq!(Guid::from_disk(&Guid::ESP.to_disk()), Guid::ESP);
}

#[test]
fn golden_primary_table() {
    let bytes = image();
    let digest = Sha256::digest(&bytes[..(34 * SECTOR) as usize]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, include_str!("golden-primary.sha256").trim());
}

#[test]
fn sfdisk_reads_what_we_write() {
    let path = std::env::temp_dir().join(format!("gpt-{}.img", std::process::id()));
    std::fs::write(&path, image()).unwrap();
    let out = Command::new("sfdisk").arg("--dump").arg(&path).output();
    std::fs::remove_file(&path).unwrap();
    let Ok(out) = out else {
        eprintln!("sfdisk is not installed; cross-check skipped");
        return;
    };
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dump.contains("label: gpt"), "{dump}");
    assert!(
        dump.contains(
            "start=        2048, size=      131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        ),
        "{dump}"
    );
    assert!(dump.contains("name=\"META\""), "{dump}");
    assert!(dump.contains("name=\"STATE\""), "{dump}");
}

/// `image()` with its backup header (the last sector) damaged.
fn image_without_backup() -> Vec<u8> {
    let mut bytes = image();
    let last = bytes.len() - SECTOR as usize;
    bytes[last + 30] ^= 1;
    bytes
}

#[test]
fn a_damaged_primary_falls_back_to_the_backup_at_the_end() {
    let table = Table::read_from(&mut Cursor::new(image())).unwrap();
    for at in [SECTOR as usize + 30, (2 * SECTOR) as usize + 60] {
        let mut bytes = image();
        bytes[at] ^= 1;
        assert_eq!(Table::read_from(&mut Cursor::new(bytes)).unwrap(), table);
    }
    let mut bytes = image();
    bytes[SECTOR as usize..2 * SECTOR as usize].fill(0);
    assert_eq!(Table::read_from(&mut Cursor::new(bytes)).unwrap(), table);
}

#[test]
fn damaged_tables_are_refused() {
    let mut bytes = image_without_backup();
    bytes[SECTOR as usize + 30] ^= 1;
    let err = Table::read_from(&mut Cursor::new(bytes)).unwrap_err();
    assert!(
        matches!(err, GptError::Checksum { which: "header" }),
        "{err}"
    );
    let mut bytes = image_without_backup();
    bytes[(2 * SECTOR) as usize + 60] ^= 1;
    let err = Table::read_from(&mut Cursor::new(bytes)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GPT partition entries CRC32 mismatch: the table is damaged"
    );
    let err = Table::read_from(&mut Cursor::new(vec![0u8; 4096])).unwrap_err();
    assert!(matches!(err, GptError::NoHeader));
}

#[test]
fn overlapping_and_oversized_partitions_are_refused() {
    let mut disk = with_state("x", 1 << 20, 8 << 20);
    disk.table.partitions[1].first_lba = disk.table.partitions[0].last_lba;
    let err = disk
        .table
        .write_to(&mut Cursor::new(Vec::new()))
        .unwrap_err();
    assert_eq!(err.to_string(), "partitions \"EFI\" and \"META\" overlap");
    let mut disk = with_state("x", 1 << 20, 8 << 20);
    disk.table.partitions[2].last_lba = disk.table.total_sectors;
    let err = disk
        .table
        .write_to(&mut Cursor::new(Vec::new()))
        .unwrap_err();
    assert!(err.to_string().starts_with("partition \"STATE\""), "{err}");
}

fn hybrid_image() -> Vec<u8> {
    let disk = with_state("talos-image-disk", 1 << 20, 64 << 20);
    let mut buf = Cursor::new(vec![0u8; disk.size() as usize]);
    disk.table.write_hybrid_to(&mut buf, "EFI").unwrap();
    buf.into_inner()
}

#[test]
fn hybrid_mbr_has_a_fat32_entry_over_the_efi_partition() {
    let bytes = hybrid_image();
    let entry = |i: usize| &bytes[446 + 16 * i..462 + 16 * i];
    let u32_at = |e: &[u8], o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap());
    // Entry 1: FAT32 (LBA) over EFI, 64 MiB from sector 2048.
    assert_eq!(entry(0)[0], 0x00, "not marked bootable");
    assert_eq!(entry(0)[4], 0x0C);
    assert_eq!((u32_at(entry(0), 8), u32_at(entry(0), 12)), (2048, 131_072));
    // CHS (head, sector, cylinder) 32/33/0 to 73/1/8 for 255 heads and 63 sectors.
    assert_eq!(entry(0)[1..4], [32, 33, 0]);
    assert_eq!(entry(0)[5..8], [73, 1, 8]);
    // Entry 2: the GPT's 0xEE entry from LBA 1 up to the FAT partition.
    assert_eq!(entry(1)[4], 0xEE);
    assert_eq!((u32_at(entry(1), 8), u32_at(entry(1), 12)), (1, 2047));
    assert_eq!(entry(1)[1..4], [0, 2, 0]);
    assert!(entry(2).iter().chain(entry(3)).all(|b| *b == 0));
    assert_eq!(bytes[510..512], [0x55, 0xAA]);

    // The GPT itself is what `write_to` writes.
    let plain = image();
    assert_eq!(bytes[512..], plain[512..]);
    let digest = Sha256::digest(&bytes[..(34 * SECTOR) as usize]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, include_str!("golden-hybrid.sha256").trim());
}

#[test]
fn hybrid_mbr_needs_a_partition_mbr_can_address() {
    let mut disk = with_state("x", 1 << 20, 8 << 20);
    let err = disk
        .table
        .write_hybrid_to(&mut Cursor::new(Vec::new()), "BOOT")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the hybrid MBR names partition \"BOOT\", which the table does not have"
    );
    // A 2 TiB disk whose STATE starts past what 32 bits address; nothing is written.
    disk.table.total_sectors = (1 << 32) + 4096;
    disk.table.partitions[2].first_lba = 1 << 32;
    disk.table.partitions[2].last_lba = (1 << 32) + 7;
    let err = disk
        .table
        .write_hybrid_to(&mut Cursor::new(Vec::new()), "STATE")
        .unwrap_err();
    assert!(
        matches!(err, GptError::BeyondMbr(ref name) if name == "STATE"),
        "{err}"
    );
}

#[test]
fn fdisk_and_sfdisk_read_both_tables_of_a_hybrid_mbr() {
    let path = std::env::temp_dir().join(format!("gpt-hybrid-{}.img", std::process::id()));
    std::fs::write(&path, hybrid_image()).unwrap();
    let gpt = Command::new("sfdisk").arg("--dump").arg(&path).output();
    let mbr = Command::new("fdisk")
        .args(["--list", "--type", "dos"])
        .arg(&path)
        .output();
    std::fs::remove_file(&path).unwrap();
    let (Ok(gpt), Ok(mbr)) = (gpt, mbr) else {
        eprintln!("sfdisk or fdisk is not installed; cross-check skipped");
        return;
    };
    let gpt_dump = String::from_utf8_lossy(&gpt.stdout);
    assert!(
        gpt.status.success(),
        "{}",
        String::from_utf8_lossy(&gpt.stderr)
    );
    assert!(gpt_dump.contains("label: gpt"), "{gpt_dump}");
    assert!(gpt_dump.contains("name=\"STATE\""), "{gpt_dump}");
    let listing = String::from_utf8_lossy(&mbr.stdout);
    assert!(
        mbr.status.success(),
        "{}",
        String::from_utf8_lossy(&mbr.stderr)
    );
    assert!(listing.contains("Disklabel type: dos"), "{listing}");
    let fat = listing
        .lines()
        .find(|l| l.ends_with("W95 FAT32 (LBA)"))
        .unwrap_or_else(|| panic!("no FAT32 entry in {listing}"));
    let words: Vec<&str> = fat.split_whitespace().collect();
    assert_eq!(words[1..4], ["2048", "133119", "131072"], "{fat}");
    assert!(listing.lines().any(|l| l.ends_with(" ee GPT")), "{listing}");
}

/// The image's table, written onto a disk of `disk_bytes` as `dd` would.
fn flashed(disk_bytes: u64, hybrid: bool) -> Cursor<Vec<u8>> {
    let disk = SystemDisk::new("talos-image-disk", 1 << 20, 64 << 20);
    let mut buf = Cursor::new(vec![0u8; disk.size() as usize]);
    if hybrid {
        disk.table.write_hybrid_to(&mut buf, "EFI").unwrap();
    } else {
        disk.table.write_to(&mut buf).unwrap();
    }
    let mut bytes = buf.into_inner();
    bytes.resize(bytes.len().max(disk_bytes as usize), 0);
    Cursor::new(bytes)
}

/// Completes the table of `disk` in place, the way the node does.
fn complete_in_place(disk: &mut Cursor<Vec<u8>>) -> Table {
    let old = Table::read_from(disk).unwrap();
    let sectors = disk.get_ref().len() as u64 / SECTOR;
    let new = layout::complete(&old, sectors).unwrap();
    new.write_backup_to(disk).unwrap();
    new.write_primary_to(disk).unwrap();
    new
}

#[test]
fn a_table_from_a_smaller_image_reads_and_grows_to_the_disk() {
    let mut disk = flashed(256 << 20, false);
    let old = Table::read_from(&mut disk).unwrap();
    assert!(old.total_sectors < (256 << 20) / SECTOR);
    let new = complete_in_place(&mut disk);
    assert_eq!(Table::read_from(&mut disk).unwrap(), new);
    assert_eq!(new.total_sectors, (256 << 20) / SECTOR);
    assert_eq!(new.last_usable_lba(), (256 << 20) / SECTOR - 34);
    let bytes = disk.get_ref();
    let mbr_size = u32::from_le_bytes(bytes[458..462].try_into().unwrap());
    assert_eq!(u64::from(mbr_size), new.total_sectors - 1);
    // The backup alone holds the new table too.
    let mut torn = bytes.clone();
    torn[SECTOR as usize..2 * SECTOR as usize].fill(0);
    assert_eq!(Table::read_from(&mut Cursor::new(torn)).unwrap(), new);
}

#[test]
fn a_power_cut_before_the_primary_is_written_leaves_the_old_table() {
    let mut disk = flashed(256 << 20, false);
    let old = Table::read_from(&mut disk).unwrap();
    let new = layout::complete(&old, (256 << 20) / SECTOR).unwrap();
    new.write_backup_to(&mut disk).unwrap();
    assert_eq!(Table::read_from(&mut disk).unwrap(), old);
    // Entries written, header not yet: the primary's CRC fails and the new backup wins.
    disk.get_mut()[2 * SECTOR as usize..34 * SECTOR as usize].copy_from_slice(&new.entries()[..]);
    assert_eq!(Table::read_from(&mut disk).unwrap(), new);
}

#[test]
fn growing_keeps_a_hybrid_mbr() {
    let mut disk = flashed(256 << 20, true);
    let before = disk.get_ref()[..SECTOR as usize].to_vec();
    complete_in_place(&mut disk);
    assert_eq!(disk.get_ref()[..SECTOR as usize], before[..]);
}

#[test]
fn sfdisk_reads_a_grown_table_without_complaint() {
    let path = std::env::temp_dir().join(format!("gpt-grown-{}.img", std::process::id()));
    let image = flashed(0, false).into_inner();
    let mut file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.write_all(&image).unwrap();
    file.set_len(600 << 20).unwrap();
    let dump = || {
        let out = Command::new("sfdisk").arg("--dump").arg(&path).output();
        out.ok().map(|out| {
            assert!(out.status.success(), "{out:?}");
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let Some((_, complaint)) = dump() else {
        std::fs::remove_file(&path).unwrap();
        eprintln!("sfdisk is not installed; cross-check skipped");
        return;
    };
    assert!(
        complaint.contains("not on the end of the device"),
        "{complaint}"
    );
    let old = Table::read_from(&mut file).unwrap();
    let new = layout::complete(&old, (600 << 20) / SECTOR).unwrap();
    new.write_backup_to(&mut file).unwrap();
    new.write_primary_to(&mut file).unwrap();
    let (dump, stderr) = dump().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(stderr, "");
    let sectors = (600u64 << 20) / SECTOR;
    assert!(
        dump.contains(&format!("last-lba: {}\n", sectors - 34)),
        "{dump}"
    );
    let line = |name: &str| {
        dump.lines()
            .find(|l| l.ends_with(&format!("name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no {name} in {dump}"))
            .to_owned()
    };
    // STATE right after META (1 MiB + 64 MiB EFI + 1 MiB META), 100 MiB.
    assert!(
        line("STATE").contains(&format!(
            "start=      135168, size=      204800, type={}",
            Guid::LINUX_DATA
        )),
        "{dump}"
    );
    // EPHEMERAL from 166 MiB to 599 MiB: the last MiB holds the backup table.
    assert!(
        line("EPHEMERAL").contains(&format!(
            "start=      339968, size=      886784, type={}",
            Guid::LINUX_DATA
        )),
        "{dump}"
    );
}
