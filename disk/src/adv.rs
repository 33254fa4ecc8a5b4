//! META: the Talos ADV key/value block, written twice at the start of the META partition.
//!
//! Block layout (256 KiB, big-endian): magic1, then `tag u32, size u32, value` records
//! ended by tag 0; the last 36 bytes are a SHA-256 of the block (computed with the
//! checksum zeroed) and magic2.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub const BLOCK_SIZE: usize = 256 * 1024;
/// Both copies; the rest of the 1 MiB partition stays zero.
pub const AREA_SIZE: usize = 2 * BLOCK_SIZE;
pub const PARTITION_SIZE: u64 = 1024 * 1024;
const MAGIC1: u32 = 0x5a4b_3c2d;
const MAGIC2: u32 = 0xa5b4_c3d2;
const TRAILER: usize = 36;
const RECORD_HEADER: usize = 8;

/// Talos META tags.
pub mod tag {
    /// The boot label to fall back to while an upgrade is on trial.
    pub const UPGRADE: u8 = 0x06;
    pub const STAGED_UPGRADE_IMAGE_REF: u8 = 0x07;
    pub const STAGED_UPGRADE_INSTALL_OPTIONS: u8 = 0x08;
    pub const METAL_NETWORK_CONFIG: u8 = 0x0a;
    pub const DOWNLOAD_URL_CODE: u8 = 0x0b;
    pub const DISK_IMAGE_BOOTLOADER: u8 = 0x11;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvError {
    #[error("META holds at most {max} bytes of records; these need {needed}")]
    Full { needed: usize, max: usize },
    #[error("tags 0 to 5 are reserved; {0:#04x} cannot be written")]
    ReservedTag(u8),
    #[error("neither META copy is valid: {0}")]
    Corrupt(&'static str),
}

/// The decoded key/value store. Tags are `u8` in the API and `u32` on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    values: BTreeMap<u8, Vec<u8>>,
}

impl Meta {
    pub fn get(&self, tag: u8) -> Option<&[u8]> {
        self.values.get(&tag).map(Vec::as_slice)
    }

    pub fn set(&mut self, tag: u8, value: impl Into<Vec<u8>>) -> Result<(), AdvError> {
        if tag <= 5 {
            return Err(AdvError::ReservedTag(tag));
        }
        let previous = self.values.insert(tag, value.into());
        if let Err(e) = self.encode_block() {
            match previous {
                Some(v) => self.values.insert(tag, v),
                None => self.values.remove(&tag),
            };
            return Err(e);
        }
        Ok(())
    }

    pub fn remove(&mut self, tag: u8) -> Option<Vec<u8>> {
        self.values.remove(&tag)
    }

    pub fn tags(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.values.iter().map(|(t, v)| (*t, v.as_slice()))
    }

    fn encode_block(&self) -> Result<Vec<u8>, AdvError> {
        let max = BLOCK_SIZE - 4 - TRAILER - 4;
        let needed: usize = self.values.values().map(|v| RECORD_HEADER + v.len()).sum();
        if needed > max {
            return Err(AdvError::Full { needed, max });
        }
        let mut block = vec![0u8; BLOCK_SIZE];
        block[..4].copy_from_slice(&MAGIC1.to_be_bytes());
        let mut at = 4;
        for (tag, value) in &self.values {
            block[at..at + 4].copy_from_slice(&u32::from(*tag).to_be_bytes());
            block[at + 4..at + 8].copy_from_slice(&(value.len() as u32).to_be_bytes());
            block[at + 8..at + 8 + value.len()].copy_from_slice(value);
            at += RECORD_HEADER + value.len();
        }
        block[BLOCK_SIZE - 4..].copy_from_slice(&MAGIC2.to_be_bytes());
        let sum = Sha256::digest(&block);
        block[BLOCK_SIZE - TRAILER..BLOCK_SIZE - 4].copy_from_slice(&sum);
        Ok(block)
    }

    /// The first `AREA_SIZE` bytes of the META partition: two identical copies.
    pub fn encode(&self) -> Result<Vec<u8>, AdvError> {
        let block = self.encode_block()?;
        Ok([block.as_slice(), block.as_slice()].concat())
    }

    /// Reads copy 1, falling back to copy 2. An all-zero area is an empty store.
    pub fn decode(area: &[u8]) -> Result<Meta, AdvError> {
        if area.iter().all(|b| *b == 0) {
            return Ok(Meta::default());
        }
        let first = area
            .get(..BLOCK_SIZE)
            .ok_or(AdvError::Corrupt("too short"))?;
        match decode_block(first) {
            Ok(meta) => Ok(meta),
            Err(e) => area.get(BLOCK_SIZE..AREA_SIZE).map_or(Err(e), decode_block),
        }
    }
}

fn decode_block(block: &[u8]) -> Result<Meta, AdvError> {
    let be = |o: usize| u32::from_be_bytes(block[o..o + 4].try_into().unwrap_or_default());
    if be(0) != MAGIC1 || be(BLOCK_SIZE - 4) != MAGIC2 {
        return Err(AdvError::Corrupt("bad magic"));
    }
    let mut zeroed = block.to_vec();
    zeroed[BLOCK_SIZE - TRAILER..BLOCK_SIZE - 4].fill(0);
    if Sha256::digest(&zeroed)[..] != block[BLOCK_SIZE - TRAILER..BLOCK_SIZE - 4] {
        return Err(AdvError::Corrupt("checksum mismatch"));
    }
    let end = BLOCK_SIZE - TRAILER;
    let mut values = BTreeMap::new();
    let mut at = 4;
    while at + RECORD_HEADER <= end {
        let tag = be(at);
        if tag == 0 {
            break;
        }
        let size = be(at + 4) as usize;
        let value = block
            .get(at + RECORD_HEADER..at + RECORD_HEADER + size)
            .filter(|_| at + RECORD_HEADER + size <= end)
            .ok_or(AdvError::Corrupt("a record runs past the block"))?;
        let tag = u8::try_from(tag).map_err(|_| AdvError::Corrupt("a tag does not fit in u8"))?;
        values.insert(tag, value.to_vec());
        at += RECORD_HEADER + size;
    }
    Ok(Meta { values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_two_copies() {
        let mut meta = Meta::default();
        meta.set(tag::UPGRADE, "A").unwrap();
        meta.set(0x0c, vec![1, 2, 3]).unwrap();
        let area = meta.encode().unwrap();
        assert_eq!(area.len(), AREA_SIZE);
        assert_eq!(area[..BLOCK_SIZE], area[BLOCK_SIZE..]);
        assert_eq!(Meta::decode(&area).unwrap(), meta);
    }

    #[test]
    fn golden_bytes() {
        let mut meta = Meta::default();
        meta.set(tag::UPGRADE, "A").unwrap();
        let area = meta.encode().unwrap();
        assert_eq!(
            area[..13],
            [0x5a, 0x4b, 0x3c, 0x2d, 0, 0, 0, 6, 0, 0, 0, 1, b'A']
        );
        assert!(area[13..BLOCK_SIZE - TRAILER].iter().all(|b| *b == 0));
        assert_eq!(area[BLOCK_SIZE - 4..BLOCK_SIZE], [0xa5, 0xb4, 0xc3, 0xd2]);
        let mut zeroed = area[..BLOCK_SIZE].to_vec();
        zeroed[BLOCK_SIZE - TRAILER..BLOCK_SIZE - 4].fill(0);
        assert_eq!(
            Sha256::digest(&zeroed)[..],
            area[BLOCK_SIZE - TRAILER..BLOCK_SIZE - 4]
        );
    }

    #[test]
    fn falls_back_to_the_second_copy() {
        let mut meta = Meta::default();
        meta.set(tag::UPGRADE, "B").unwrap();
        let mut area = meta.encode().unwrap();
        area[100] ^= 0xff;
        assert_eq!(Meta::decode(&area).unwrap(), meta);
        area[BLOCK_SIZE + 100] ^= 0xff;
        assert_eq!(
            Meta::decode(&area),
            Err(AdvError::Corrupt("checksum mismatch"))
        );
    }

    #[test]
    fn blank_partition_is_empty_and_reserved_tags_are_refused() {
        assert_eq!(Meta::decode(&vec![0; AREA_SIZE]).unwrap(), Meta::default());
        assert_eq!(Meta::default().set(5, "x"), Err(AdvError::ReservedTag(5)));
    }

    #[test]
    fn refuses_to_overflow_and_keeps_the_old_value() {
        let mut meta = Meta::default();
        meta.set(0x0c, "keep").unwrap();
        let err = meta.set(0x0c, vec![0; BLOCK_SIZE]).unwrap_err();
        assert!(matches!(err, AdvError::Full { .. }), "{err}");
        assert_eq!(meta.get(0x0c), Some(&b"keep"[..]));
    }
}
