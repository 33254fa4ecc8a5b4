//! machined's own log: tracing events go to /dev/console and to a fixed-size ring in memory.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Upstream keeps about 1 MiB of log per service.
pub const RING_CAPACITY: usize = 1 << 20;

/// A byte ring of the most recent log output, with a live feed for followers.
#[derive(Debug, Clone)]
pub struct LogRing {
    inner: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
    live: broadcast::Sender<Arc<[u8]>>,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(16 * 1024)))),
            capacity,
            live: broadcast::channel(256).0,
        }
    }

    pub fn append(&self, bytes: &[u8]) {
        {
            let mut ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
            let overflow = (ring.len() + bytes.len()).saturating_sub(self.capacity);
            ring.drain(..overflow);
            ring.extend(bytes);
        }
        let _ = self.live.send(Arc::from(bytes));
    }

    /// The buffered log; with `tail_lines`, only that many last lines.
    pub fn snapshot(&self, tail_lines: Option<usize>) -> Vec<u8> {
        let ring = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<u8> = ring.iter().copied().collect();
        match tail_lines {
            None => all,
            Some(n) => {
                let text = all.as_slice();
                let mut newlines = 0;
                let mut start = 0;
                for (i, b) in text.iter().enumerate().rev().skip(1) {
                    if *b == b'\n' {
                        newlines += 1;
                        if newlines == n {
                            start = i + 1;
                            break;
                        }
                    }
                }
                if n == 0 {
                    Vec::new()
                } else {
                    text[start..].to_vec()
                }
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.live.subscribe()
    }
}

/// Writes each formatted event to the console (when present) and the ring.
#[derive(Debug, Clone)]
struct ConsoleAndRing {
    console: Option<Arc<Mutex<std::fs::File>>>,
    ring: LogRing,
}

impl Write for ConsoleAndRing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(console) = &self.console {
            let _ = console
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(buf);
        }
        self.ring.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the global tracing subscriber. Call once, after /dev is mounted.
pub fn init(ring: LogRing) {
    let console = OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .ok()
        .map(|f| Arc::new(Mutex::new(f)));
    let writer = ConsoleAndRing { console, ring };
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_writer(move || writer.clone())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_only_the_newest_bytes() {
        let ring = LogRing::new(8);
        ring.append(b"abcdef");
        ring.append(b"ghij");
        assert_eq!(ring.snapshot(None), b"cdefghij");
        ring.append(b"0123456789xyz");
        assert_eq!(ring.snapshot(None), b"56789xyz");
    }

    #[test]
    fn tail_returns_last_lines() {
        let ring = LogRing::new(1024);
        ring.append(b"one\ntwo\nthree\n");
        assert_eq!(ring.snapshot(Some(2)), b"two\nthree\n");
        assert_eq!(ring.snapshot(Some(10)), b"one\ntwo\nthree\n");
        assert_eq!(ring.snapshot(Some(0)), b"");
    }

    #[tokio::test]
    async fn followers_see_new_output() {
        let ring = LogRing::new(64);
        let mut rx = ring.subscribe();
        ring.append(b"hello\n");
        assert_eq!(&*rx.recv().await.unwrap(), b"hello\n");
    }
}
