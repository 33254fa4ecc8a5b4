//! The integrity of an etcd snapshot as `Maintenance/Snapshot` streams it: the bbolt database,
//! then 32 bytes of SHA-256 over the database. Checked while the chunks arrive.

use ring::digest::{Context, SHA256, SHA256_OUTPUT_LEN};

/// bbolt's magic number, in the meta page that starts the file (after a 16-byte page header).
const BOLT_MAGIC: [u8; 4] = 0xED0C_DAEDu32.to_le_bytes();
const BOLT_MAGIC_AT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is {0} bytes: too short for a database and its SHA-256")]
    TooShort(u64),
    #[error("the snapshot does not start with a bbolt database")]
    NotBolt,
    #[error("the snapshot's SHA-256 does not match its database: it is damaged or incomplete")]
    Checksum,
}

/// Feeds the stream's chunks in order, then [`finish`](Self::finish).
#[derive(Clone)]
pub struct SnapshotCheck {
    hash: Context,
    /// The last bytes seen, which may turn out to be the trailing checksum.
    tail: Vec<u8>,
    head: Vec<u8>,
    total: u64,
}

impl Default for SnapshotCheck {
    fn default() -> Self {
        SnapshotCheck {
            hash: Context::new(&SHA256),
            tail: Vec::with_capacity(2 * SHA256_OUTPUT_LEN),
            head: Vec::with_capacity(BOLT_MAGIC_AT + BOLT_MAGIC.len()),
            total: 0,
        }
    }
}

impl std::fmt::Debug for SnapshotCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCheck")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl SnapshotCheck {
    pub fn update(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let wanted = (BOLT_MAGIC_AT + BOLT_MAGIC.len()).saturating_sub(self.head.len());
        self.head
            .extend_from_slice(&chunk[..wanted.min(chunk.len())]);
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > SHA256_OUTPUT_LEN {
            let settled = self.tail.len() - SHA256_OUTPUT_LEN;
            self.hash.update(&self.tail[..settled]);
            self.tail.drain(..settled);
        }
    }

    /// The database's size once the stream has ended, if the checksum and magic hold.
    pub fn finish(self) -> Result<u64, SnapshotError> {
        if self.total < (BOLT_MAGIC_AT + BOLT_MAGIC.len() + SHA256_OUTPUT_LEN) as u64 {
            return Err(SnapshotError::TooShort(self.total));
        }
        if self.head[BOLT_MAGIC_AT..] != BOLT_MAGIC {
            return Err(SnapshotError::NotBolt);
        }
        if self.hash.finish().as_ref() != self.tail.as_slice() {
            return Err(SnapshotError::Checksum);
        }
        Ok(self.total - SHA256_OUTPUT_LEN as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(db_len: usize) -> Vec<u8> {
        let mut db: Vec<u8> = (0..db_len).map(|i| (i * 7) as u8).collect();
        db[BOLT_MAGIC_AT..BOLT_MAGIC_AT + 4].copy_from_slice(&BOLT_MAGIC);
        let sum = ring::digest::digest(&SHA256, &db);
        db.extend_from_slice(sum.as_ref());
        db
    }

    fn check(bytes: &[u8], chunk: usize) -> Result<u64, SnapshotError> {
        let mut check = SnapshotCheck::default();
        for piece in bytes.chunks(chunk) {
            check.update(piece);
        }
        check.finish()
    }

    #[test]
    fn accepts_an_intact_snapshot_in_any_chunking() {
        let bytes = snapshot(5000);
        for chunk in [1, 3, 31, 32, 33, 4096, 10_000] {
            assert_eq!(check(&bytes, chunk), Ok(5000), "chunks of {chunk}");
        }
    }

    #[test]
    fn refuses_damaged_truncated_or_foreign_data() {
        let mut damaged = snapshot(5000);
        damaged[100] ^= 1;
        assert_eq!(check(&damaged, 512), Err(SnapshotError::Checksum));
        let whole = snapshot(5000);
        assert_eq!(
            check(&whole[..whole.len() - 1], 512),
            Err(SnapshotError::Checksum)
        );
        let mut foreign = snapshot(5000);
        foreign[BOLT_MAGIC_AT] = 0;
        assert_eq!(check(&foreign, 512), Err(SnapshotError::NotBolt));
        assert_eq!(check(&whole[..40], 8), Err(SnapshotError::TooShort(40)));
    }
}
