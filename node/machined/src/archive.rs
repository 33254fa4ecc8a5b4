//! The .tar.gz byte streams of Copy and Kubeconfig.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use talos_proto::common::Data;
use tokio::sync::mpsc;
use tonic::Status;

const CHUNK: usize = 64 * 1024;

/// Sends what is written as `Data` messages of up to 64 KiB. A write fails with BrokenPipe
/// once the client has gone, which ends the producer.
pub struct ChunkSender {
    tx: mpsc::Sender<Result<Data, Status>>,
    buffer: Vec<u8>,
}

impl ChunkSender {
    pub fn new(tx: mpsc::Sender<Result<Data, Status>>) -> ChunkSender {
        ChunkSender {
            tx,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = Data {
            metadata: None,
            bytes: std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK)),
        };
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A gzip stream over `out`, at the level upstream's archiver uses.
pub fn gzip<W: Write>(out: W) -> GzEncoder<W> {
    GzEncoder::new(out, Compression::default())
}

/// A .tar.gz holding one regular file.
pub fn single_file(name: &str, mode: u32, mtime: u64, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(gzip(Vec::new()));
    let mut header = tar::Header::new_gnu();
    header.set_mode(mode);
    header.set_mtime(mtime);
    header.set_size(content.len() as u64);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, content)?;
    tar.into_inner()?.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn chunks_are_bounded_and_arrive_in_order() {
        let (tx, mut rx) = mpsc::channel(8);
        let writer = std::thread::spawn(move || {
            let mut sender = ChunkSender::new(tx);
            let payload: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
            sender.write_all(&payload).unwrap();
            sender.flush().unwrap();
        });
        let mut received = Vec::new();
        let mut sizes = Vec::new();
        while let Some(Ok(data)) = rx.blocking_recv() {
            sizes.push(data.bytes.len());
            received.extend(data.bytes);
        }
        writer.join().unwrap();
        assert_eq!(sizes, [CHUNK, CHUNK, 150_000 - 2 * CHUNK]);
        assert!(received.iter().enumerate().all(|(i, b)| *b == i as u8));
    }

    #[test]
    fn a_gone_client_fails_the_writer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut sender = ChunkSender::new(tx);
        let err = sender.write_all(&vec![0; CHUNK]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn single_file_archives_hold_one_private_file() {
        let bytes = single_file("kubeconfig", 0o600, 1_700_000_000, b"apiVersion: v1\n").unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("kubeconfig"));
        assert_eq!(entry.header().mode().unwrap(), 0o600);
        let mut content = String::new();
        entry.read_to_string(&mut content).unwrap();
        assert_eq!(content, "apiVersion: v1\n");
        drop(entry);
        assert!(entries.next().is_none());
    }
}
