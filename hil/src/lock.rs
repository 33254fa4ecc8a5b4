//! Board locks: one runner per board. A lock is a file `<lock_dir>/<board>.lock`, created
//! exclusively, naming its holder's pid, host and start time; dropping the lock removes it.
//! A lock whose holder process is gone (on this host) is reported as stale, with its holder,
//! and left for a person to remove.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("Board {board} is locked by {holder} ({path})")]
    Held {
        board: String,
        holder: Holder,
        path: PathBuf,
    },
    #[error(
        "Board {board} has a stale lock: {holder} no longer runs; remove {path} if no one uses the board"
    )]
    Stale {
        board: String,
        holder: Holder,
        path: PathBuf,
    },
    #[error("Cannot create the lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} since {} (unix time)",
            self.pid, self.host, self.since
        )
    }
}

impl Holder {
    fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            host: this_host(),
            since: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "pid={}\nhost={}\nsince={}\n",
            self.pid, self.host, self.since
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Some(Holder {
            pid: field("pid")?.parse().ok()?,
            host: field("host")?,
            since: field("since")?.parse().ok()?,
        })
    }

    /// Whether the holder is known to be gone: same host and no such process.
    fn is_gone(&self) -> bool {
        self.host == this_host()
            && i32::try_from(self.pid).map_or(true, |pid| {
                kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH)
            })
    }
}

fn this_host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A held board lock; released on drop.
#[derive(Debug)]
pub struct BoardLock {
    path: PathBuf,
}

impl BoardLock {
    pub fn acquire(dir: &Path, board: &str) -> Result<BoardLock, LockError> {
        let path = dir.join(format!("{board}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(Holder::me().to_text().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok(BoardLock { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = Holder::parse(&text).unwrap_or(Holder {
                    pid: 0,
                    host: format!("unknown (unreadable lock: {:?})", text.trim()),
                    since: 0,
                });
                let board = board.to_owned();
                if holder.is_gone() {
                    Err(LockError::Stale {
                        board,
                        holder,
                        path,
                    })
                } else {
                    Err(LockError::Held {
                        board,
                        holder,
                        path,
                    })
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoardLock {
    fn drop(&mut self) {
        // Already gone is fine: a person may have removed it.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_runner_is_refused_and_told_who_holds_the_board() {
        let dir = tempfile::tempdir().unwrap();
        let lock = BoardLock::acquire(dir.path(), "rpi").unwrap();
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.starts_with(&format!("pid={}\n", std::process::id())),
            "{text}"
        );
        let err = BoardLock::acquire(dir.path(), "rpi").unwrap_err();
        let LockError::Held { holder, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(holder.pid, std::process::id());
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        BoardLock::acquire(dir.path(), "other").unwrap();
        drop(lock);
        BoardLock::acquire(dir.path(), "rpi").expect("released on drop");
    }

    #[test]
    fn a_dead_holder_is_reported_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = Holder {
            pid: dead,
            host: this_host(),
            since: 1_700_000_000,
        };
        std::fs::write(dir.path().join("rpi.lock"), stale.to_text()).unwrap();
        let err = BoardLock::acquire(dir.path(), "rpi").unwrap_err();
        assert!(
            matches!(err, LockError::Stale { ref holder, .. } if *holder == stale),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {dead}")) && text.contains("1700000000"),
            "{text}"
        );
        assert!(text.contains("rpi.lock"), "{text}");
    }
}
