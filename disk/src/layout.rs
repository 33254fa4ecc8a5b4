//! The partitions of a system disk. The image builder makes EFI, META and STATE; on first
//! boot the node stretches the GPT to the disk it was written onto and adds what is missing
//! of STATE and EPHEMERAL (the rest of the disk) after the last partition.

use crate::gpt::{Guid, Partition, SECTOR, Table};

pub const EFI: &str = "EFI";
pub const META: &str = "META";
pub const STATE: &str = "STATE";
pub const EPHEMERAL: &str = "EPHEMERAL";

const MIB: u64 = 1024 * 1024;
pub const META_SIZE: u64 = crate::adv::PARTITION_SIZE;
pub const STATE_SIZE: u64 = 100 * MIB;
/// Free space smaller than this after the last partition gets no EPHEMERAL.
pub const EPHEMERAL_MIN_SIZE: u64 = 64 * MIB;
/// Partitions start, and are sized, in whole MiB.
const ALIGN: u64 = MIB / SECTOR;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the disk has {disk} sectors, fewer than the {table} its GPT was written for")]
    Shrunk { disk: u64, table: u64 },
    #[error("no room for the {size}-byte {name} partition after the last partition")]
    NoRoom { name: &'static str, size: u64 },
    #[error("the GPT has no free entry for {0}")]
    NoEntry(&'static str),
}

/// `table` as the node completes it on a disk of `disk_sectors`: the backup table at the
/// disk's end, then STATE (if absent) and EPHEMERAL (if absent, and the rest of the disk
/// holds at least [`EPHEMERAL_MIN_SIZE`]) after the last partition, as Linux data
/// partitions whose GUIDs derive from the disk's. The same input gives the same table.
pub fn complete(table: &Table, disk_sectors: u64) -> Result<Table, LayoutError> {
    if disk_sectors < table.total_sectors {
        return Err(LayoutError::Shrunk {
            disk: disk_sectors,
            table: table.total_sectors,
        });
    }
    let mut out = Table {
        total_sectors: disk_sectors,
        ..table.clone()
    };
    // Whole MiB up to the backup table.
    let end = (out.last_usable_lba() + 1) / ALIGN * ALIGN;
    let mut add = |name: &'static str, size: Option<u64>| {
        if out.find(name).is_some() {
            return Ok(());
        }
        let next = out.partitions.iter().map(|p| p.last_lba + 1).max();
        let first = next.unwrap_or(ALIGN).div_ceil(ALIGN) * ALIGN;
        let last = match size {
            Some(size) if first + size / SECTOR <= end => first + size / SECTOR - 1,
            Some(size) => return Err(LayoutError::NoRoom { name, size }),
            None if first + EPHEMERAL_MIN_SIZE / SECTOR <= end => end - 1,
            None => return Ok(()),
        };
        if out.partitions.len() >= out.entry_count as usize {
            return Err(LayoutError::NoEntry(name));
        }
        out.partitions.push(Partition {
            name: name.to_owned(),
            type_guid: Guid::LINUX_DATA,
            unique_guid: Guid::derived(&format!("{}/{name}", out.disk_guid)),
            first_lba: first,
            last_lba: last,
        });
        Ok(())
    };
    add(STATE, Some(STATE_SIZE))?;
    add(EPHEMERAL, None)?;
    Ok(out)
}

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

    /// The image's table without STATE, on a disk of `disk_mib`.
    fn without_state(disk_mib: u64) -> (Table, u64) {
        let mut disk = SystemDisk::new("talos-image-disk", MIB, 100 * MIB);
        disk.table.partitions.retain(|p| p.name != STATE);
        (disk.table, disk_mib * MIB / SECTOR)
    }

    #[test]
    fn completing_adds_state_then_ephemeral_to_the_end_of_the_disk() {
        let (table, sectors) = without_state(1024);
        let done = complete(&table, sectors).unwrap();
        assert_eq!(done.total_sectors, sectors);
        assert_eq!(done.disk_guid, table.disk_guid);
        assert_eq!(done.partitions[..2], table.partitions[..]);
        let state = done.find(STATE).unwrap();
        let meta = done.find(META).unwrap();
        assert_eq!(state.first_lba, meta.last_lba + 1);
        assert_eq!(state.len(), STATE_SIZE);
        let eph = done.find(EPHEMERAL).unwrap();
        assert_eq!(eph.first_lba, state.last_lba + 1);
        // Whole MiB up to the last MiB, which holds the backup table.
        assert_eq!(eph.offset() + eph.len(), 1023 * MIB);
        assert_eq!(eph.len() % MIB, 0);
        assert!(
            done.partitions
                .iter()
                .all(|p| p.type_guid == Guid::LINUX_DATA || p.name == EFI)
        );
        assert_eq!(
            state.unique_guid,
            Guid::derived(&format!("{}/STATE", table.disk_guid))
        );
        assert_ne!(state.unique_guid, eph.unique_guid);
        // Idempotent: a second boot finds nothing to do.
        assert_eq!(complete(&done, sectors).unwrap(), done);
    }

    #[test]
    fn completing_keeps_an_existing_state_and_aligns_after_it() {
        let mut disk = SystemDisk::new("x", 10 * MIB, 64 * MIB);
        // A STATE that ends off the MiB grid.
        disk.table.partitions[2].last_lba -= 7;
        let done = complete(&disk.table, 4096 * MIB / SECTOR).unwrap();
        assert_eq!(done.find(STATE), disk.table.find(STATE));
        let eph = done.find(EPHEMERAL).unwrap();
        assert_eq!(eph.offset(), disk.partition(STATE).offset() + STATE_SIZE);
        assert_eq!(eph.offset() % MIB, 0);
    }

    #[test]
    fn an_image_on_a_disk_of_its_own_size_stays_as_it_is() {
        let disk = SystemDisk::new("talos-image-disk", MIB, 100 * MIB);
        let sectors = disk.table.total_sectors;
        assert_eq!(complete(&disk.table, sectors).unwrap(), disk.table);
        // Less than EPHEMERAL_MIN_SIZE free: the table grows, nothing is added.
        let small = sectors + (EPHEMERAL_MIN_SIZE - MIB) / SECTOR;
        let grown = complete(&disk.table, small).unwrap();
        assert_eq!(grown.partitions, disk.table.partitions);
        assert_eq!(grown.total_sectors, small);
        let enough = sectors + EPHEMERAL_MIN_SIZE / SECTOR;
        let eph = complete(&disk.table, enough).unwrap();
        assert_eq!(eph.find(EPHEMERAL).unwrap().len(), EPHEMERAL_MIN_SIZE);
    }

    #[test]
    fn completing_refuses_what_cannot_fit() {
        let (table, _) = without_state(1024);
        assert_eq!(
            complete(&table, table.total_sectors - 1),
            Err(LayoutError::Shrunk {
                disk: table.total_sectors - 1,
                table: table.total_sectors
            })
        );
        // A disk as big as the image without STATE.
        let mut small = table.clone();
        small.total_sectors -= STATE_SIZE / SECTOR;
        let err = complete(&small, small.total_sectors).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no room for the 104857600-byte STATE partition after the last partition"
        );
        let full = SystemDisk::new("x", MIB, 8 * MIB).with_gpt_entries(3);
        let err = complete(&full.table, 1024 * MIB / SECTOR).unwrap_err();
        assert_eq!(err, LayoutError::NoEntry(EPHEMERAL));
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
