//! `talosctl etcd members|snapshot`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde::Serialize;
use talos_machinery::etcd_snapshot::SnapshotCheck;
use talos_proto::machine::EtcdMember;

use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat};

pub const ETCD_EXAMPLES: &str = "\
Examples:
  # The members of the etcd cluster, as a control-plane node sees them
  talosctl -n 10.5.0.2 etcd members

  # Back up etcd: the database and its checksum, checked before the file is kept
  talosctl -n 10.5.0.2 etcd snapshot db.snapshot

Both need a control-plane node whose etcd is running: a worker, or a node in maintenance mode,
answers FailedPrecondition; a node whose etcd is not up answers Unavailable.";

#[derive(Debug, Args)]
pub struct EtcdArgs {
    #[command(subcommand)]
    pub command: EtcdCommand,
}

#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// List the members of the etcd cluster of each target node.
    ///
    /// Columns: NODE ID HOSTNAME PEER URLS CLIENT URLS LEARNER, the ID in hex as etcd prints
    /// it. Needs the os:reader role or above (os:etcd:backup too).
    #[command(visible_alias = "member")]
    Members {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },

    /// Save a snapshot of etcd's database from one control-plane node to PATH.
    ///
    /// The stream is written to PATH.part, its trailing SHA-256 is checked against the
    /// database, and only then is the file synced and renamed to PATH; a damaged or cut
    /// stream leaves PATH untouched. Needs os:admin, os:operator or os:etcd:backup.
    Snapshot {
        /// Where to save the snapshot; an existing file is replaced only by a complete one.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
}

/// One member as one node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberView {
    pub node: String,
    pub id: String,
    pub hostname: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub learner: bool,
}

impl MemberView {
    pub fn new(node: String, member: &EtcdMember) -> MemberView {
        MemberView {
            node,
            id: format!("{:016x}", member.id),
            hostname: member.hostname.clone(),
            peer_urls: member.peer_urls.clone(),
            client_urls: member.client_urls.clone(),
            learner: member.is_learner,
        }
    }
}

pub async fn run(global: &GlobalArgs, args: EtcdArgs) -> anyhow::Result<()> {
    match args.command {
        EtcdCommand::Members { output } => members(global, output).await,
        EtcdCommand::Snapshot { path } => snapshot(global, &path).await,
    }
}

async fn members(global: &GlobalArgs, format: OutputFormat) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) = global::each(&targets, |t| async move {
        Ok(t.client.etcd_member_list().await?)
    })
    .await;
    let views: Vec<MemberView> = ok
        .into_iter()
        .flat_map(|(label, reply)| {
            let node = global::node_label(&label, reply.metadata.as_ref());
            reply
                .members
                .iter()
                .map(|m| MemberView::new(node.clone(), m))
                .collect::<Vec<_>>()
        })
        .collect();
    match format {
        OutputFormat::Table => print!("{}", members_table(&views)),
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())
}

pub fn members_table(views: &[MemberView]) -> String {
    let mut rows = vec![
        [
            "NODE",
            "ID",
            "HOSTNAME",
            "PEER URLS",
            "CLIENT URLS",
            "LEARNER",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(views.iter().map(|m| {
        vec![
            m.node.clone(),
            m.id.clone(),
            m.hostname.clone(),
            m.peer_urls.join(","),
            m.client_urls.join(","),
            m.learner.to_string(),
        ]
    }));
    output::table(&rows)
}

async fn snapshot(global: &GlobalArgs, path: &Path) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let [target] = targets.as_slice() else {
        bail!(
            "command \"etcd snapshot\" requires exactly one node (got {})",
            targets.len()
        );
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".part");
    let partial = PathBuf::from(partial);
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "{spinner} etcd snapshot: {bytes} {bytes_per_sec}",
    )?);
    let received = async {
        let mut chunks = target
            .client
            .etcd_snapshot()
            .await
            .context("error reading etcd snapshot")?;
        let mut check = SnapshotCheck::default();
        while let Some(chunk) = chunks
            .next_chunk()
            .await
            .context("error reading etcd snapshot")?
        {
            check.update(&chunk);
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
            bar.inc(chunk.len() as u64);
        }
        let database = check.finish().context("the snapshot failed its check")?;
        file.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        anyhow::Ok(database)
    }
    .await;
    bar.finish_and_clear();
    let database = match received {
        Ok(database) => database,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, path)
        .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
    println!(
        "etcd snapshot saved to {:?} ({} bytes: a {} database and its SHA-256, verified)",
        path.display().to_string(),
        database + 32,
        HumanBytes(database)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_print_as_upstream_columns() {
        let member = EtcdMember {
            id: 0x8e9e_05c5_2164_694d,
            hostname: "cp-1".into(),
            peer_urls: vec!["https://10.5.0.2:2380".into()],
            client_urls: vec!["https://10.5.0.2:2379".into(), "https://[::1]:2379".into()],
            is_learner: false,
        };
        let table = members_table(&[MemberView::new("10.5.0.2".into(), &member)]);
        assert_eq!(
            table,
            "NODE       ID                 HOSTNAME   PEER URLS               CLIENT URLS                                LEARNER\n\
             10.5.0.2   8e9e05c52164694d   cp-1       https://10.5.0.2:2380   https://10.5.0.2:2379,https://[::1]:2379   false\n"
        );
    }
}
