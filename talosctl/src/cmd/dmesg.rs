//! `talosctl dmesg`.

use std::io::Write as _;

use clap::Args;

use crate::global::{self, GlobalArgs, Target};

#[derive(Debug, Args)]
pub struct DmesgArgs {
    /// Keep streaming new kernel messages.
    #[arg(short, long)]
    pub follow: bool,

    /// With --follow: start from the end of the buffer, showing only new messages.
    #[arg(long)]
    pub tail: bool,
}

pub async fn run(global: &GlobalArgs, args: DmesgArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let prefix = targets.len() > 1;
    let mut tasks = Vec::with_capacity(targets.len());
    for target in targets.clone() {
        tasks.push(tokio::spawn(stream(target, args.follow, args.tail, prefix)));
    }
    let mut failed = 0;
    for (task, target) in tasks.into_iter().zip(&targets) {
        let result = task.await.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(err) = result {
            failed += 1;
            eprintln!("error on node {}: {err:#}", target.label);
        }
    }
    global::check_failures(failed, targets.len())
}

/// Copies one node's kernel log to stdout; with several nodes each line gets a `NODE: ` prefix.
async fn stream(target: Target, follow: bool, tail: bool, prefix: bool) -> anyhow::Result<()> {
    let mut chunks = target.client.dmesg(follow, tail).await?;
    let mut pending = Vec::new();
    while let Some(chunk) = chunks.next_chunk().await? {
        if !prefix {
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk)?;
            out.flush()?;
            continue;
        }
        pending.extend_from_slice(&chunk);
        write_prefixed_lines(&target.label, &mut pending)?;
    }
    if prefix && !pending.is_empty() {
        pending.push(b'\n');
        write_prefixed_lines(&target.label, &mut pending)?;
    }
    Ok(())
}

fn write_prefixed_lines(label: &str, pending: &mut Vec<u8>) -> std::io::Result<()> {
    let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
        return Ok(());
    };
    let mut out = std::io::stdout().lock();
    for line in pending[..end].split(|&b| b == b'\n') {
        write!(out, "{label}: ")?;
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    pending.drain(..=end);
    Ok(())
}
