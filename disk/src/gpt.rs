//! GUID partition tables: encoding for the image builder, decoding for the node.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

pub const SECTOR: u64 = 512;
/// The partition entries UEFI asks for (16 KiB); boards with a bootloader at 8 KiB use fewer.
pub const DEFAULT_ENTRIES: u32 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors taken by the partition entry array (128 entries of 128 bytes).
const HEADER_SIZE: usize = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const NAME_UNITS: usize = 36;
/// MBR partition types: the GPT's protective entry, and FAT32 addressed by LBA.
const MBR_PROTECTIVE: u8 = 0xEE;
const MBR_FAT32_LBA: u8 = 0x0C;

/// A GUID in its textual form's order; stored mixed-endian on disk as UEFI requires.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ESP: Guid = Guid::from_fields(0xC12A7328, 0xF81F, 0x11D2, 0xBA4B_00A0C93EC93B);
    pub const LINUX_DATA: Guid = Guid::from_fields(0x0FC63DAF, 0x8483, 0x4772, 0x8E79_3D69D8477DE4);

    const fn from_fields(a: u32, b: u16, c: u16, d: u64) -> Guid {
        let a = a.to_be_bytes();
        let b = b.to_be_bytes();
        let c = c.to_be_bytes();
        let d = d.to_be_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ])
    }

    /// A stable version-4-shaped GUID derived from `seed`, so images are reproducible.
    pub fn derived(seed: &str) -> Guid {
        let hash = Sha256::digest(seed.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }

    fn to_disk(self) -> [u8; 16] {
        let g = self.0;
        [
            g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11], g[12], g[13],
            g[14], g[15],
        ]
    }

    fn from_disk(d: &[u8]) -> Guid {
        Guid([
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13],
            d[14], d[15],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9]
        )?;
        g[10..].iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }

    pub fn is_empty(&self) -> bool {
        self.last_lba < self.first_lba
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub total_sectors: u64,
    pub partitions: Vec<Partition>,
    /// Entries in the partition array (128 bytes each).
    pub entry_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("no GPT header: the signature at LBA 1 is not \"EFI PART\"")]
    NoHeader,
    #[error("GPT {which} CRC32 mismatch: the table is damaged")]
    Checksum { which: &'static str },
    #[error("GPT header is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "partition {name:?} ({first}..={last}) is outside the usable sectors {usable_first}..={usable_last}"
    )]
    OutOfRange {
        name: String,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions {0:?} and {1:?} overlap")]
    Overlap(String, String),
    #[error("partition name {0:?} is longer than 36 UTF-16 units")]
    NameTooLong(String),
    #[error("the hybrid MBR names partition {0:?}, which the table does not have")]
    NoPartition(String),
    #[error("partition {0:?} ends beyond the 2^32 sectors an MBR entry can address")]
    BeyondMbr(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Table {
    fn entry_sectors(&self) -> u64 {
        (u64::from(self.entry_count) * ENTRY_SIZE).div_ceil(SECTOR)
    }

    pub fn first_usable_lba(&self) -> u64 {
        2 + self.entry_sectors()
    }

    pub fn last_usable_lba(&self) -> u64 {
        self.total_sectors - 2 - self.entry_sectors()
    }

    pub fn find(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    fn check(&self) -> Result<(), GptError> {
        let (lo, hi) = (self.first_usable_lba(), self.last_usable_lba());
        for (i, p) in self.partitions.iter().enumerate() {
            if p.name.encode_utf16().count() > NAME_UNITS {
                return Err(GptError::NameTooLong(p.name.clone()));
            }
            if p.first_lba < lo || p.last_lba > hi || p.is_empty() {
                return Err(GptError::OutOfRange {
                    name: p.name.clone(),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable_first: lo,
                    usable_last: hi,
                });
            }
            if let Some(q) = self.partitions[..i]
                .iter()
                .find(|q| p.first_lba <= q.last_lba && q.first_lba <= p.last_lba)
            {
                return Err(GptError::Overlap(q.name.clone(), p.name.clone()));
            }
        }
        Ok(())
    }

    fn entries(&self) -> Vec<u8> {
        let mut out = vec![0u8; (u64::from(self.entry_count) * ENTRY_SIZE) as usize];
        for (p, e) in self
            .partitions
            .iter()
            .zip(out.chunks_exact_mut(ENTRY_SIZE as usize))
        {
            e[0..16].copy_from_slice(&p.type_guid.to_disk());
            e[16..32].copy_from_slice(&p.unique_guid.to_disk());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            for (i, unit) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        out
    }

    fn header(&self, current: u64, backup: u64, entries_lba: u64, entries_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn protective_mbr(&self) -> Vec<u8> {
        let mut m = vec![0u8; SECTOR as usize];
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.total_sectors - 1).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Sector 0 for firmware that reads only MBR partition tables: entry 1 is FAT32 (LBA)
    /// over the partition `fat`, entry 2 the 0xEE entry over the GPT in front of it.
    fn hybrid_mbr(&self, fat: &str) -> Result<Vec<u8>, GptError> {
        let part = self
            .find(fat)
            .ok_or_else(|| GptError::NoPartition(fat.to_owned()))?;
        let sectors = u32::try_from(part.last_lba + 1 - part.first_lba);
        let (Ok(first), Ok(sectors)) = (u32::try_from(part.first_lba), sectors) else {
            return Err(GptError::BeyondMbr(fat.to_owned()));
        };
        let mut m = vec![0u8; SECTOR as usize];
        m[446..462].copy_from_slice(&mbr_entry(MBR_FAT32_LBA, first, sectors));
        m[462..478].copy_from_slice(&mbr_entry(MBR_PROTECTIVE, 1, first - 1));
        m[510] = 0x55;
        m[511] = 0xAA;
        Ok(m)
    }

    /// Writes the protective MBR, the primary and the backup table; the disk must already
    /// be `total_sectors` long.
    pub fn write_to(&self, disk: &mut (impl Write + Seek)) -> Result<(), GptError> {
        self.check()?;
        self.write_with_mbr(disk, &self.protective_mbr())
    }

    /// [`Table::write_to`] with a hybrid MBR, for boot ROMs that read only MBR (the
    /// Raspberry Pi 3's): the partition `fat` also appears as an MBR FAT32 (LBA) entry.
    /// GPT readers (Linux, U-Boot, UEFI) still use the GPT, as its 0xEE entry starts at LBA 1.
    pub fn write_hybrid_to(
        &self,
        disk: &mut (impl Write + Seek),
        fat: &str,
    ) -> Result<(), GptError> {
        self.check()?;
        self.write_with_mbr(disk, &self.hybrid_mbr(fat)?)
    }

    fn write_with_mbr(&self, disk: &mut (impl Write + Seek), mbr: &[u8]) -> Result<(), GptError> {
        disk.seek(SeekFrom::Start(0))?;
        disk.write_all(mbr)?;
        self.write_primary(disk)?;
        self.write_backup(disk)
    }

    fn write_primary(&self, disk: &mut (impl Write + Seek)) -> Result<(), GptError> {
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        // Entries before the header that vouches for them.
        disk.seek(SeekFrom::Start(2 * SECTOR))?;
        disk.write_all(&entries)?;
        disk.seek(SeekFrom::Start(SECTOR))?;
        disk.write_all(&self.header(1, self.total_sectors - 1, 2, crc))?;
        disk.flush()?;
        Ok(())
    }

    fn write_backup(&self, disk: &mut (impl Write + Seek)) -> Result<(), GptError> {
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        let last = self.total_sectors - 1;
        let backup_entries = last - self.entry_sectors();
        disk.seek(SeekFrom::Start(backup_entries * SECTOR))?;
        disk.write_all(&entries)?;
        disk.write_all(&self.header(last, 1, backup_entries, crc))?;
        disk.flush()?;
        Ok(())
    }

    /// The first half of rewriting a table in place, on a disk that may have grown since it
    /// was written (`total_sectors` is its size now): the backup table at the disk's end.
    /// Flush the disk, then call [`Table::write_primary_to`]. A power cut before the primary
    /// is whole leaves either the old primary or, once it is torn, the new backup, which is
    /// where Linux and [`Table::read_from`] look next.
    pub fn write_backup_to(&self, disk: &mut (impl Write + Seek)) -> Result<(), GptError> {
        self.check()?;
        self.write_backup(disk)
    }

    /// The second half: the primary table, then the protective MBR's size stretched to the
    /// disk. A hybrid MBR is left as it is (its 0xEE entry covers only the GPT).
    pub fn write_primary_to(&self, disk: &mut (impl Read + Write + Seek)) -> Result<(), GptError> {
        self.check()?;
        self.write_primary(disk)?;
        let mut mbr = vec![0u8; SECTOR as usize];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut mbr)?;
        if mbr[446 + 4] == MBR_PROTECTIVE && mbr[454..458] == 1u32.to_le_bytes() {
            let size = u32::try_from(self.total_sectors - 1).unwrap_or(u32::MAX);
            mbr[458..462].copy_from_slice(&size.to_le_bytes());
            disk.seek(SeekFrom::Start(0))?;
            disk.write_all(&mbr)?;
            disk.flush()?;
        }
        Ok(())
    }

    /// Reads the primary table, checking both CRCs; when it is damaged, the backup in the
    /// disk's last sector (as Linux does).
    pub fn read_from(disk: &mut (impl Read + Seek)) -> Result<Table, GptError> {
        let primary = match Table::read_header_at(disk, 1) {
            Err(GptError::Io(e)) => return Err(GptError::Io(e)),
            other => other,
        };
        if primary.is_ok() {
            return primary;
        }
        let sectors = disk.seek(SeekFrom::End(0))? / SECTOR;
        match sectors.checked_sub(1).filter(|last| *last > 1) {
            Some(last) => Table::read_header_at(disk, last).or(primary),
            None => primary,
        }
    }

    fn read_header_at(disk: &mut (impl Read + Seek), lba: u64) -> Result<Table, GptError> {
        let mut h = vec![0u8; SECTOR as usize];
        disk.seek(SeekFrom::Start(lba * SECTOR))?;
        disk.read_exact(&mut h)?;
        if &h[0..8] != SIGNATURE {
            return Err(GptError::NoHeader);
        }
        let u32_at =
            |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u64_at =
            |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let header_size = u32_at(&h, 12) as usize;
        if !(HEADER_SIZE..=SECTOR as usize).contains(&header_size) {
            return Err(GptError::Malformed("header size out of range"));
        }
        let stored = u32_at(&h, 16);
        let mut zeroed = h[..header_size].to_vec();
        zeroed[16..20].fill(0);
        if crc32fast::hash(&zeroed) != stored {
            return Err(GptError::Checksum { which: "header" });
        }
        if u64_at(&h, 24) != lba {
            return Err(GptError::Malformed(
                "the header names another sector as its own",
            ));
        }
        let other_lba = u64_at(&h, 32);
        let entries_lba = u64_at(&h, 72);
        let count = u64::from(u32_at(&h, 80));
        let size = u64::from(u32_at(&h, 84));
        if !(128..=4096).contains(&size) || count > 1024 {
            return Err(GptError::Malformed(
                "partition entry array size out of range",
            ));
        }
        let mut entries = vec![0u8; (count * size) as usize];
        disk.seek(SeekFrom::Start(entries_lba * SECTOR))?;
        disk.read_exact(&mut entries)?;
        if crc32fast::hash(&entries) != u32_at(&h, 88) {
            return Err(GptError::Checksum {
                which: "partition entries",
            });
        }
        let partitions = entries
            .chunks_exact(size as usize)
            .filter(|e| e[0..16].iter().any(|b| *b != 0))
            .map(|e| {
                let units: Vec<u16> = e[56..128]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|u| *u != 0)
                    .collect();
                Partition {
                    name: String::from_utf16_lossy(&units),
                    type_guid: Guid::from_disk(&e[0..16]),
                    unique_guid: Guid::from_disk(&e[16..32]),
                    first_lba: u64_at(e, 32),
                    last_lba: u64_at(e, 40),
                }
            })
            .collect();
        Ok(Table {
            disk_guid: Guid::from_disk(&h[56..72]),
            total_sectors: lba.max(other_lba) + 1,
            partitions,
            entry_count: count as u32,
        })
    }
}

/// One MBR partition entry: not bootable, CHS addresses for a 255-head, 63-sector geometry.
fn mbr_entry(kind: u8, first: u32, sectors: u32) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[1..4].copy_from_slice(&chs(first));
    e[4] = kind;
    e[5..8].copy_from_slice(&chs(first + sectors - 1));
    e[8..12].copy_from_slice(&first.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    e
}

/// A CHS address, or 1023/254/63 ("use the LBA") past cylinder 1023.
fn chs(lba: u32) -> [u8; 3] {
    const HEADS: u32 = 255;
    const SECTORS: u32 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    // Cylinder bits 8-9 sit in the top two bits of the sector byte.
    [
        head as u8,
        sector as u8 | ((cylinder >> 2) as u8 & 0xC0),
        cylinder as u8,
    ]
}

#[cfg(test)]
mod tests;
