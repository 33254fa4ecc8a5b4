//! Writes a raw disk image to a block device or disk file, sparse-aware, with progress and a
//! read-back verify.
//!
//! Only the image's data ranges (found with `SEEK_DATA`/`SEEK_HOLE`) are written: holes are
//! blocks no filesystem in the image uses, so their old contents on the target do not matter.
//! A regular-file target is truncated and re-extended first, so its holes read as zeros and
//! all-zero blocks inside data ranges are skipped there too. After writing, the target is
//! synced, its cached pages are dropped, and every data range is read back and compared.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rustix::fs::{Advice, fadvise};

/// Bytes copied per write.
const CHUNK: usize = 1 << 20;
/// The granularity at which zero blocks are skipped on file targets.
const ZERO_BLOCK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("Cannot open the image {path}")]
    OpenImage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot open the flash target {path}")]
    OpenTarget {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("The target {path} holds {capacity} bytes but the image {image} needs {needed}")]
    TooSmall {
        path: PathBuf,
        image: PathBuf,
        capacity: u64,
        needed: u64,
    },
    #[error("Cannot {action} {path} at offset {offset}")]
    Io {
        action: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("Read-back of {path} differs from the image at offset {offset}")]
    VerifyMismatch { path: PathBuf, offset: u64 },
}

/// Where a flash is; reported after every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashProgress {
    pub phase: FlashPhase,
    /// Data bytes done in this phase.
    pub done: u64,
    /// Data bytes this phase handles in all.
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashPhase {
    Write,
    Verify,
}

/// What a finished flash did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashReport {
    /// The image's length in bytes.
    pub image_len: u64,
    /// Bytes in the image's data ranges, all of which were verified.
    pub data_bytes: u64,
    /// Bytes actually written (data ranges less skipped zero blocks on file targets).
    pub written_bytes: u64,
}

/// The byte ranges of `file` that hold data, in order; the rest are holes.
pub fn data_ranges(file: &File, len: u64) -> std::io::Result<Vec<Range<u64>>> {
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < len {
        let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(err) => return Err(err.into()),
        };
        let end = match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start)) {
            Ok(end) => end.min(len),
            Err(err) => return Err(err.into()),
        };
        if end > start {
            ranges.push(start..end);
        }
        offset = end.max(start + 1);
    }
    Ok(ranges)
}

/// Writes `image` onto `target` (a block device or a disk file, created if missing), then
/// verifies it by reading it back.
pub fn flash(
    image: &Path,
    target: &Path,
    progress: &mut dyn FnMut(FlashProgress),
) -> Result<FlashReport, FlashError> {
    let mut source = File::open(image).map_err(|source| FlashError::OpenImage {
        path: image.to_owned(),
        source,
    })?;
    let io = |action: &'static str, path: &Path, offset: u64| {
        let path = path.to_owned();
        move |source| FlashError::Io {
            action,
            path,
            offset,
            source,
        }
    };
    let image_len = source.metadata().map_err(io("stat", image, 0))?.len();
    let ranges = data_ranges(&source, image_len).map_err(io("find data in", image, 0))?;
    let data_bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();

    let is_file = std::fs::metadata(target).map_or(true, |m| m.is_file());
    let mut out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(is_file)
        .truncate(is_file)
        .open(target)
        .map_err(|source| FlashError::OpenTarget {
            path: target.to_owned(),
            source,
        })?;
    if is_file {
        out.set_len(image_len)
            .map_err(io("extend", target, image_len))?;
    } else {
        let capacity = out
            .seek(SeekFrom::End(0))
            .map_err(io("measure", target, 0))?;
        if capacity < image_len {
            return Err(FlashError::TooSmall {
                path: target.to_owned(),
                image: image.to_owned(),
                capacity,
                needed: image_len,
            });
        }
    }

    let mut buffer = vec![0u8; CHUNK];
    let mut done = 0;
    let mut written_bytes = 0;
    for range in &ranges {
        let mut offset = range.start;
        while offset < range.end {
            let len = (range.end - offset).min(CHUNK as u64) as usize;
            let chunk = &mut buffer[..len];
            source
                .seek(SeekFrom::Start(offset))
                .and_then(|_| source.read_exact(chunk))
                .map_err(io("read", image, offset))?;
            written_bytes += write_chunk(&mut out, chunk, offset, is_file)
                .map_err(io("write", target, offset))?;
            offset += len as u64;
            done += len as u64;
            progress(FlashProgress {
                phase: FlashPhase::Write,
                done,
                total: data_bytes,
            });
        }
    }
    out.sync_all().map_err(io("sync", target, 0))?;
    // Read back from the device, not from the page cache this process just filled.
    fadvise(&out, 0, None, Advice::DontNeed)
        .map_err(|e| io("drop the cache of", target, 0)(e.into()))?;

    let mut readback = vec![0u8; CHUNK];
    let mut verified = 0;
    for range in &ranges {
        let mut offset = range.start;
        while offset < range.end {
            let len = (range.end - offset).min(CHUNK as u64) as usize;
            source
                .seek(SeekFrom::Start(offset))
                .and_then(|_| source.read_exact(&mut buffer[..len]))
                .map_err(io("read", image, offset))?;
            out.seek(SeekFrom::Start(offset))
                .and_then(|_| out.read_exact(&mut readback[..len]))
                .map_err(io("read back", target, offset))?;
            if let Some(at) = (0..len).find(|&i| buffer[i] != readback[i]) {
                return Err(FlashError::VerifyMismatch {
                    path: target.to_owned(),
                    offset: offset + at as u64,
                });
            }
            offset += len as u64;
            verified += len as u64;
            progress(FlashProgress {
                phase: FlashPhase::Verify,
                done: verified,
                total: data_bytes,
            });
        }
    }
    Ok(FlashReport {
        image_len,
        data_bytes,
        written_bytes,
    })
}

/// Writes one chunk at `offset`; on a fresh file target all-zero blocks stay holes.
/// Returns the bytes written.
fn write_chunk(out: &mut File, chunk: &[u8], offset: u64, is_file: bool) -> std::io::Result<u64> {
    if !is_file {
        out.seek(SeekFrom::Start(offset))?;
        out.write_all(chunk)?;
        return Ok(chunk.len() as u64);
    }
    let mut written = 0;
    for (index, block) in chunk.chunks(ZERO_BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        out.seek(SeekFrom::Start(offset + (index * ZERO_BLOCK) as u64))?;
        out.write_all(block)?;
        written += block.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse image: 4 MiB long, data at 0..12 KiB (the middle 4 KiB zero) and at 3 MiB.
    fn sparse_image(dir: &Path) -> PathBuf {
        let path = dir.join("image.raw");
        let mut file = File::create(&path).unwrap();
        file.set_len(4 << 20).unwrap();
        let mut head = vec![0xA5u8; 12288];
        head[4096..8192].fill(0);
        file.write_all(&head).unwrap();
        file.seek(SeekFrom::Start(3 << 20)).unwrap();
        file.write_all(&[0x5Au8; 4096]).unwrap();
        file.sync_all().unwrap();
        path
    }

    #[test]
    fn file_target_gets_identical_bytes_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let image = sparse_image(dir.path());
        let target = dir.path().join("disk.raw");
        std::fs::write(&target, vec![0xFFu8; 5 << 20]).unwrap();
        let mut seen = Vec::new();
        let report = flash(&image, &target, &mut |p| seen.push(p)).unwrap();

        assert_eq!(
            std::fs::read(&target).unwrap(),
            std::fs::read(&image).unwrap()
        );
        assert_eq!(report.image_len, 4 << 20);
        assert!(report.data_bytes >= 12288 + 4096, "{report:?}");
        assert!(report.data_bytes < 4 << 20, "holes were found: {report:?}");
        assert!(report.written_bytes < report.data_bytes, "{report:?}");
        let last_write = seen.iter().rfind(|p| p.phase == FlashPhase::Write).unwrap();
        let last_verify = seen.last().unwrap();
        assert_eq!(last_write.done, report.data_bytes);
        assert_eq!(
            *last_verify,
            FlashProgress {
                phase: FlashPhase::Verify,
                done: report.data_bytes,
                total: report.data_bytes
            }
        );
        let target_file = File::open(&target).unwrap();
        let target_data: u64 = data_ranges(&target_file, 4 << 20)
            .unwrap()
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        assert!(target_data < 4 << 20, "the target stays sparse");
    }

    #[test]
    fn data_ranges_cover_written_bytes_only() {
        let dir = tempfile::tempdir().unwrap();
        let image = sparse_image(dir.path());
        let file = File::open(&image).unwrap();
        let ranges = data_ranges(&file, 4 << 20).unwrap();
        assert_eq!(ranges.first().unwrap().start, 0);
        assert!(ranges.iter().any(|r| r.contains(&(3 << 20))));
        assert!(!ranges.iter().any(|r| r.contains(&(2 << 20))));
    }

    #[test]
    fn a_missing_image_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = flash(
            &dir.path().join("nope.raw"),
            &dir.path().join("t"),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope.raw"), "{err}");
    }
}
