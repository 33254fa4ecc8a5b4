//! `talosctl logs SERVICE`.

use std::io::Write as _;

use anyhow::bail;
use clap::Args;
use talos_proto::common::ContainerDriver;
use talos_proto::machine::LogsRequest;
use tokio::sync::watch;

use crate::global::{self, GlobalArgs, Target};

/// Upstream's containerd namespace of Talos's own services.
const SYSTEM_NAMESPACE: &str = "system";

pub const LOGS_EXAMPLES: &str = "\
Examples:
  # Everything machined has logged since boot
  talosctl -n 10.5.0.2 logs machined

  # The last 20 lines, then new lines as they come (Ctrl-C to stop)
  talosctl -n 10.5.0.2 logs machined --tail 20 -f

  # etcd's own output, following it across restarts
  talosctl -n 10.5.0.2 logs etcd -f

  # A node in maintenance mode (no client certificate yet)
  talosctl logs machined --insecure -n 10.5.0.2";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service whose log to print: machined, or a service it runs (containerd, etcd).
    #[arg(value_name = "SERVICE")]
    pub service: String,

    /// Keep streaming new lines until interrupted (Ctrl-C).
    #[arg(short, long)]
    pub follow: bool,

    /// How many of the last lines to print first; -1 prints the whole log.
    #[arg(
        long,
        default_value_t = -1,
        allow_negative_numbers = true,
        value_name = "LINES"
    )]
    pub tail: i32,

    /// Read a Kubernetes container's log (k8s.io namespace). Not supported by talos-rs nodes:
    /// they run no containers yet.
    #[arg(short, long)]
    pub kubernetes: bool,

    /// Connect without a client certificate and without verifying the node (maintenance mode).
    #[arg(short, long)]
    pub insecure: bool,
}

pub async fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<()> {
    if args.kubernetes {
        bail!(
            "logs -k/--kubernetes is not supported: talos-rs nodes run no Kubernetes containers \
             yet; drop -k to read a Talos service's log"
        );
    }
    let targets = global::targets(global, args.insecure).await?;
    let request = LogsRequest {
        namespace: SYSTEM_NAMESPACE.to_owned(),
        id: args.service.clone(),
        driver: ContainerDriver::Containerd.into(),
        follow: args.follow,
        tail_lines: args.tail,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let mut tasks = Vec::with_capacity(targets.len());
    for target in targets.clone() {
        tasks.push(tokio::spawn(stream(
            target,
            request.clone(),
            stop_rx.clone(),
        )));
    }
    let mut failed = 0;
    for (task, target) in tasks.into_iter().zip(&targets) {
        let result = task.await.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(err) = result {
            failed += 1;
            eprintln!("error on node {}: {err:#}", target.label);
        }
    }
    interrupt.abort();
    global::check_failures(failed, targets.len())
}

/// Prints one node's log as `NODE: line` lines until the stream ends or `stop` turns true; a
/// last line without a newline is printed too.
async fn stream(
    target: Target,
    request: LogsRequest,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut chunks = target.client.logs(request).await?;
    let mut pending = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = chunks.next_chunk() => chunk,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        match chunk {
            Ok(Some(bytes)) => {
                pending.extend_from_slice(&bytes);
                if !write_lines(&target.label, &mut pending)? {
                    return Ok(());
                }
            }
            Ok(None) => break,
            Err(err) if err.code() == Some(tonic::Code::Cancelled) => break,
            Err(err) => return Err(err.into()),
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        write_lines(&target.label, &mut pending)?;
    }
    Ok(())
}

/// Writes the complete lines of `pending` with a `NODE: ` prefix and keeps the rest. Returns
/// false when stdout is closed (`talosctl logs … | head`).
fn write_lines(label: &str, pending: &mut Vec<u8>) -> anyhow::Result<bool> {
    let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
        return Ok(true);
    };
    let mut text = Vec::with_capacity(end + 1);
    for line in pending[..end].split(|&b| b == b'\n') {
        text.extend_from_slice(label.as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    pending.drain(..=end);
    let mut out = std::io::stdout().lock();
    match out.write_all(&text).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_unfinished_line() {
        let mut pending = b"one\ntwo\nthr".to_vec();
        assert!(write_lines("n", &mut pending).unwrap());
        assert_eq!(pending, b"thr");
        let mut none = b"partial".to_vec();
        assert!(write_lines("n", &mut none).unwrap());
        assert_eq!(none, b"partial");
    }
}
