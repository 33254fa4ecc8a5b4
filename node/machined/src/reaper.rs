//! Child processes and their exit statuses. As PID 1, machined also inherits every orphan on
//! the node, so one place reaps them all and hands each watched child's status to its owner.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub struct Reaper {
    /// Locked across spawn and reap, so a child cannot exit before it is watched.
    watched: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    /// Whether to reap every child (PID 1) or only watched ones (tests, where other children
    /// of the process belong to someone else).
    reap_orphans: bool,
}

impl Reaper {
    pub fn new(reap_orphans: bool) -> Reaper {
        Reaper {
            watched: Mutex::default(),
            reap_orphans,
        }
    }

    /// Spawns `command`; the receiver yields its exit status.
    pub fn spawn(
        &self,
        command: &mut Command,
    ) -> std::io::Result<(i32, oneshot::Receiver<ExitStatus>)> {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let child = command.spawn()?;
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        let (tx, rx) = oneshot::channel();
        watched.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Collects every exited child we may reap; call on SIGCHLD.
    pub fn reap(&self) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let mut exited: Vec<(i32, i32)> = watched
            .keys()
            .filter_map(|&pid| talos_node_sys::process::reap(pid).map(|s| (pid, s)))
            .collect();
        if self.reap_orphans {
            exited.extend(
                talos_node_sys::process::reap_children()
                    .into_iter()
                    .map(|c| (c.pid, c.status)),
            );
        }
        for (pid, status) in exited {
            match watched.remove(&pid) {
                Some(owner) => {
                    let _ = owner.send(ExitStatus::from_raw(status));
                }
                None => tracing::debug!(pid, status, "reaped an orphan"),
            }
        }
    }

    /// Reaps on every SIGCHLD, for as long as the runtime runs.
    pub async fn run(self: std::sync::Arc<Self>) {
        let Ok(mut children) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        else {
            tracing::error!("cannot watch SIGCHLD: children will not be reaped");
            return;
        };
        loop {
            self.reap();
            children.recv().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn hands_each_child_its_own_status() {
        let reaper = Arc::new(Reaper::new(false));
        tokio::spawn(reaper.clone().run());
        let mut succeeds = Command::new("true");
        let mut fails = Command::new("sh");
        fails.args(["-c", "exit 3"]);
        let (_, ok) = reaper.spawn(&mut succeeds).unwrap();
        let (_, failed) = reaper.spawn(&mut fails).unwrap();
        let (ok, failed) = tokio::join!(ok, failed);
        assert!(ok.unwrap().success());
        assert_eq!(failed.unwrap().code(), Some(3));
    }
}
