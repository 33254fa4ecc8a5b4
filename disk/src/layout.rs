//! The partitions of a system disk. The image builder makes EFI and META; on first boot the
//! node stretches the GPT to the disk it was written onto and adds STATE and EPHEMERAL (the
//! rest of the disk) after the last partition. An installer writes STATE (with the config) and
//! leaves EPHEMERAL for the installed node to format.

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
    let mut out = stretched(table, disk_sectors)?;
    append(&mut out, STATE, Some(STATE_SIZE))?;
    append(&mut out, EPHEMERAL, None)?;
    Ok(out)
}

/// `table` on a disk of `disk_sectors` with STATE added if absent, as an installer writes it;
/// the installed node adds EPHEMERAL on its first boot.
pub fn with_state(table: &Table, disk_sectors: u64) -> Result<Table, LayoutError> {
    let mut out = stretched(table, disk_sectors)?;
    append(&mut out, STATE, Some(STATE_SIZE))?;
    Ok(out)
}

fn stretched(table: &Table, disk_sectors: u64) -> Result<Table, LayoutError> {
    if disk_sectors < table.total_sectors {
        return Err(LayoutError::Shrunk {
            disk: disk_sectors,
            table: table.total_sectors,
        });
    }
    Ok(Table {
        total_sectors: disk_sectors,
        ..table.clone()
    })
}

/// Adds `name` after the last partition unless the table has it: `size` bytes, or (for
/// `None`) the rest of the disk if that is at least [`EPHEMERAL_MIN_SIZE`].
fn append(out: &mut Table, name: &'static str, size: Option<u64>) -> Result<(), LayoutError> {
    if out.find(name).is_some() {
        return Ok(());
    }
    // Whole MiB up to the backup table.
    let end = (out.last_usable_lba() + 1) / ALIGN * ALIGN;
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
        assert_eq!(names, [EFI, META]);
        assert_eq!(disk.partition(EFI).offset(), 10 * MIB);
        assert_eq!(disk.partition(META).len(), MIB);
        assert_eq!(disk.size(), (10 + 200 + 1 + 1) * MIB);
        assert!(disk.table.partitions.iter().all(|p| p.offset() % MIB == 0));
    }

    /// The image's table, on a disk of `disk_mib`.
    fn image_on(disk_mib: u64) -> (Table, u64) {
        let disk = SystemDisk::new("talos-image-disk", MIB, 100 * MIB);
        (disk.table, disk_mib * MIB / SECTOR)
    }

    #[test]
    fn completing_adds_state_then_ephemeral_to_the_end_of_the_disk() {
        let (table, sectors) = image_on(1024);
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
        let disk = SystemDisk::new("x", 10 * MIB, 64 * MIB);
        let mut table = complete(&disk.table, 4096 * MIB / SECTOR).unwrap();
        table.partitions.retain(|p| p.name != EPHEMERAL);
        // A STATE that ends off the MiB grid.
        table.partitions[2].last_lba -= 7;
        let done = complete(&table, 4096 * MIB / SECTOR).unwrap();
        assert_eq!(done.find(STATE), table.find(STATE));
        let eph = done.find(EPHEMERAL).unwrap();
        assert_eq!(
            eph.offset(),
            table.find(STATE).unwrap().offset() + STATE_SIZE
        );
        assert_eq!(eph.offset() % MIB, 0);
    }

    #[test]
    fn a_disk_with_room_for_state_only_gets_no_ephemeral() {
        let disk = SystemDisk::new("talos-image-disk", MIB, 100 * MIB);
        let with_state = disk.table.total_sectors + STATE_SIZE / SECTOR;
        // Less than EPHEMERAL_MIN_SIZE free after STATE: only STATE is added.
        let small = with_state + (EPHEMERAL_MIN_SIZE - MIB) / SECTOR;
        let grown = complete(&disk.table, small).unwrap();
        let names: Vec<&str> = grown.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [EFI, META, STATE]);
        assert_eq!(grown.total_sectors, small);
        let enough = with_state + EPHEMERAL_MIN_SIZE / SECTOR;
        let eph = complete(&disk.table, enough).unwrap();
        assert_eq!(eph.find(EPHEMERAL).unwrap().len(), EPHEMERAL_MIN_SIZE);
    }

    #[test]
    fn completing_refuses_what_cannot_fit() {
        let (table, _) = image_on(1024);
        assert_eq!(
            complete(&table, table.total_sectors - 1),
            Err(LayoutError::Shrunk {
                disk: table.total_sectors - 1,
                table: table.total_sectors
            })
        );
        // A disk as big as the image.
        let small = SystemDisk::new("talos-image-disk", MIB, 100 * MIB).table;
        let err = complete(&small, small.total_sectors).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no room for the 104857600-byte STATE partition after the last partition"
        );
        let full = SystemDisk::new("x", MIB, 8 * MIB).with_gpt_entries(2);
        let err = complete(&full.table, 1024 * MIB / SECTOR).unwrap_err();
        assert_eq!(err, LayoutError::NoEntry(STATE));
        let full = SystemDisk::new("x", MIB, 8 * MIB).with_gpt_entries(3);
        let err = complete(&full.table, 1024 * MIB / SECTOR).unwrap_err();
        assert_eq!(err, LayoutError::NoEntry(EPHEMERAL));
    }

    #[test]
    fn an_installer_adds_state_only() {
        let (table, sectors) = image_on(1024);
        let installed = with_state(&table, sectors).unwrap();
        assert_eq!(installed, {
            let mut done = complete(&table, sectors).unwrap();
            done.partitions.retain(|p| p.name != EPHEMERAL);
            done
        });
        assert_eq!(
            with_state(&table, table.total_sectors)
                .unwrap_err()
                .to_string(),
            "no room for the 104857600-byte STATE partition after the last partition"
        );
    }
}
