//! The partitions of a system disk. STATE is made by the image builder; EPHEMERAL does
//! not exist yet (no container runtime on the node).

use crate::gpt::{Guid, Partition, SECTOR, Table};

pub const EFI: &str = "EFI";
pub const META: &str = "META";
pub const STATE: &str = "STATE";

const MIB: u64 = 1024 * 1024;
pub const META_SIZE: u64 = crate::adv::PARTITION_SIZE;
pub const STATE_SIZE: u64 = 100 * MIB;

/// Where each partition lives on a disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemDisk {
    pub table: Table,
}

impl SystemDisk {
    /// `first_offset` leaves room for raw bootloaders (10 MiB on Rockchip, 1 MiB on
    /// Allwinner); it is at least the 1 MiB alignment.
    pub fn new(seed: &str, first_offset: u64, efi_size: u64) -> SystemDisk {
        let start = first_offset.max(MIB) / SECTOR;
        let sizes = [
            (EFI, Guid::ESP, efi_size),
            (META, Guid::LINUX_DATA, META_SIZE),
            (STATE, Guid::LINUX_DATA, STATE_SIZE),
        ];
        let mut next = start;
        let partitions: Vec<Partition> = sizes
            .iter()
            .map(|(name, type_guid, size)| {
                let first = next;
                next += size.div_ceil(MIB) * MIB / SECTOR;
                Partition {
                    name: (*name).to_owned(),
                    type_guid: *type_guid,
                    unique_guid: Guid::derived(&format!("{seed}/{name}")),
                    first_lba: first,
                    last_lba: next - 1,
                }
            })
            .collect();
        // One MiB after the last partition holds the backup table.
        let total_sectors = next + MIB / SECTOR;
        SystemDisk {
            table: Table {
                disk_guid: Guid::derived(seed),
                total_sectors,
                partitions,
                entry_count: crate::gpt::DEFAULT_ENTRIES,
            },
        }
    }

    /// A shorter partition array, for boards whose boot ROM reads a bootloader from inside
    /// the usual 16 KiB one (Allwinner: 8 KiB).
    pub fn with_gpt_entries(mut self, entry_count: u32) -> SystemDisk {
        self.table.entry_count = entry_count;
        self
    }

    /// The same partitions on a disk of `disk_bytes`, which must hold them and the backup
    /// table; the space after STATE stays free.
    pub fn on_disk(
        seed: &str,
        first_offset: u64,
        efi_size: u64,
        disk_bytes: u64,
    ) -> Option<SystemDisk> {
        let mut disk = SystemDisk::new(seed, first_offset, efi_size);
        let total = disk_bytes / SECTOR;
        if total < disk.table.total_sectors {
            return None;
        }
        disk.table.total_sectors = total;
        Some(disk)
    }

    pub fn size(&self) -> u64 {
        self.table.total_sectors * SECTOR
    }

    pub fn partition(&self, name: &str) -> &Partition {
        self.table
            .find(name)
            .unwrap_or_else(|| panic!("SystemDisk::new always creates {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned_and_in_order() {
        let disk = SystemDisk::new("talos-image-disk", 10 * MIB, 200 * MIB);
        let names: Vec<&str> = disk
            .table
            .partitions
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, [EFI, META, STATE]);
        assert_eq!(disk.partition(EFI).offset(), 10 * MIB);
        assert_eq!(disk.partition(META).len(), MIB);
        assert_eq!(disk.partition(STATE).len(), STATE_SIZE);
        assert_eq!(disk.size(), (10 + 200 + 1 + 100 + 1) * MIB);
        assert!(disk.table.partitions.iter().all(|p| p.offset() % MIB == 0));
    }

    #[test]
    fn fits_on_a_larger_disk_only() {
        let small = SystemDisk::new("x", MIB, 100 * MIB);
        let big = SystemDisk::on_disk("x", MIB, 100 * MIB, 4096 * MIB).unwrap();
        assert_eq!(big.table.partitions, small.table.partitions);
        assert_eq!(big.size(), 4096 * MIB);
        assert!(SystemDisk::on_disk("x", MIB, 100 * MIB, small.size() - SECTOR).is_none());
    }
}
