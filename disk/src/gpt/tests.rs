use std::io::Cursor;
use std::process::Command;

use super::*;
use crate::layout::SystemDisk;

fn image() -> Vec<u8> {
    let disk = SystemDisk::new("talos-image-disk", 1 << 20, 64 << 20);
    let mut buf = Cursor::new(vec![0u8; disk.size() as usize]);
    disk.table.write_to(&mut buf).unwrap();
    buf.into_inner()
}

#[test]
fn round_trips() {
    let disk = SystemDisk::new("talos-image-disk", 10 << 20, 64 << 20);
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

#[test]
fn damaged_tables_are_refused() {
    let mut bytes = image();
    bytes[SECTOR as usize + 30] ^= 1;
    let err = Table::read_from(&mut Cursor::new(bytes)).unwrap_err();
    assert!(
        matches!(err, GptError::Checksum { which: "header" }),
        "{err}"
    );
    let mut bytes = image();
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
    let mut disk = SystemDisk::new("x", 1 << 20, 8 << 20);
    disk.table.partitions[1].first_lba = disk.table.partitions[0].last_lba;
    let err = disk
        .table
        .write_to(&mut Cursor::new(Vec::new()))
        .unwrap_err();
    assert_eq!(err.to_string(), "partitions \"EFI\" and \"META\" overlap");
    let mut disk = SystemDisk::new("x", 1 << 20, 8 << 20);
    disk.table.partitions[2].last_lba = disk.table.total_sectors;
    let err = disk
        .table
        .write_to(&mut Cursor::new(Vec::new()))
        .unwrap_err();
    assert!(err.to_string().starts_with("partition \"STATE\""), "{err}");
}
