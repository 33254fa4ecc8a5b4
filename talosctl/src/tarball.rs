//! Reading the .tar.gz streams of Copy and Kubeconfig as they arrive.

use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use flate2::read::GzDecoder;
use talos_client::DataStream;
use tokio::sync::mpsc;

/// How many chunks may wait between the network and the unpacker.
const QUEUED_CHUNKS: usize = 16;

/// A blocking reader over a byte stream, fed by a task on the runtime; it is read on a blocking
/// thread. An RPC error reads as an I/O error carrying its message.
pub struct StreamReader {
    chunks: mpsc::Receiver<Result<Vec<u8>, String>>,
    chunk: Vec<u8>,
    offset: usize,
}

impl StreamReader {
    pub fn new(mut stream: DataStream) -> StreamReader {
        let (tx, chunks) = mpsc::channel(QUEUED_CHUNKS);
        tokio::spawn(async move {
            loop {
                let item = match stream.next_chunk().await {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(e) => Err(e.to_string()),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        StreamReader {
            chunks,
            chunk: Vec::new(),
            offset: 0,
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.chunk.len() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.offset = 0;
                }
                Some(Err(message)) => return Err(std::io::Error::other(message)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.offset);
        buf[..n].copy_from_slice(&self.chunk[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Unpacks a .tar.gz stream under `dest`. Entries cannot land outside `dest`, through `..` or
/// through links unpacked before them.
pub async fn unpack(stream: DataStream, dest: &Path) -> anyhow::Result<()> {
    let reader = StreamReader::new(stream);
    let dest = dest.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(GzDecoder::new(reader));
        archive.set_overwrite(true);
        archive
            .unpack(&dest)
            .with_context(|| format!("unpacking into {}", dest.display()))
    })
    .await?
}

/// The content of the regular file `name` in a .tar.gz stream, at most `limit` bytes.
pub async fn file_content(stream: DataStream, name: &str, limit: u64) -> anyhow::Result<Vec<u8>> {
    let reader = StreamReader::new(stream);
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(GzDecoder::new(reader));
        for entry in archive.entries().context("reading the archive")? {
            let entry = entry.context("reading the archive")?;
            if entry.path().is_ok_and(|p| p == Path::new(&name)) {
                let mut content = Vec::new();
                entry
                    .take(limit + 1)
                    .read_to_end(&mut content)
                    .with_context(|| format!("reading {name} from the archive"))?;
                anyhow::ensure!(
                    content.len() as u64 <= limit,
                    "{name} in the archive is larger than {limit} bytes"
                );
                return Ok(content);
            }
        }
        anyhow::bail!("the archive holds no file named {name}")
    })
    .await?
}
