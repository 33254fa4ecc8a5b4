//! `talosctl etcd members|status|leave|remove-member|snapshot`.

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

  # Database size, leader and raft progress of each control-plane node's member
  talosctl -n 10.5.0.2,10.5.0.3,10.5.0.4 etcd status

  # Remove the member of a control-plane node that is gone for good (ID from `etcd members`)
  talosctl -n 10.5.0.2 etcd remove-member 8e9e05c52164694d

  # Back up etcd: the database and its checksum, checked before the file is kept
  talosctl -n 10.5.0.2 etcd snapshot db.snapshot

All need a control-plane node whose etcd is running: a worker, or a node in maintenance mode,
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

    /// Show the status of the etcd member of each target node.
    ///
    /// Columns: NODE MEMBER DB SIZE IN USE LEADER RAFT INDEX RAFT TERM RAFT APPLIED INDEX LEARNER
    /// ERRORS, sizes in SI units as upstream prints them. Needs the os:reader role or above.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },

    /// Make each target node leave the etcd cluster.
    ///
    /// The node removes its own member through its etcd, then stops etcd and empties its data
    /// directory, as `reset --graceful` does before wiping. etcd refuses to remove its last
    /// member, so the last node of a cluster answers FailedPrecondition. Needs os:admin.
    Leave,

    /// Make each target node hand etcd leadership to another member, if it leads.
    ///
    /// Useful before maintenance on the leader. A node that does not lead, or whose cluster has
    /// no other started voting member, has nothing to hand over and says so. Needs os:admin.
    ForfeitLeadership,

    /// Remove a member from the etcd cluster, by its ID as `etcd members` prints it (hex).
    ///
    /// For a control-plane node that is gone for good; a node that is still up leaves with
    /// `talosctl reset --graceful` instead. Sent to one node, which asks its etcd to remove the
    /// member; etcd refuses to remove the last one. Needs os:admin.
    RemoveMember {
        /// The member's ID in hex, with or without 0x.
        #[arg(value_name = "MEMBER_ID", value_parser = parse_member_id)]
        id: u64,
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
        EtcdCommand::Status { output } => status(global, output).await,
        EtcdCommand::Leave => leave(global).await,
        EtcdCommand::ForfeitLeadership => forfeit_leadership(global).await,
        EtcdCommand::RemoveMember { id } => remove_member(global, id).await,
        EtcdCommand::Snapshot { path } => snapshot(global, &path).await,
    }
}

fn parse_member_id(text: &str) -> Result<u64, String> {
    let hex = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(hex, 16)
        .map_err(|e| format!("{text:?} is not a member ID in hex as `etcd members` prints it: {e}"))
}

/// The target, when the command talks to exactly one node.
fn single<'a>(targets: &'a [global::Target], command: &str) -> anyhow::Result<&'a global::Target> {
    match targets {
        [target] => Ok(target),
        _ => bail!(
            "command \"{command}\" requires exactly one node (got {})",
            targets.len()
        ),
    }
}

/// One member's status as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub node: String,
    pub member: String,
    pub db_size: i64,
    pub db_size_in_use: i64,
    pub leader: String,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub learner: bool,
    pub errors: Vec<String>,
}

async fn status(global: &GlobalArgs, format: OutputFormat) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) = global::each(
        &targets,
        |t| async move { Ok(t.client.etcd_status().await?) },
    )
    .await;
    let views: Vec<StatusView> = ok
        .into_iter()
        .map(|(label, reply)| {
            let status = reply.member_status.unwrap_or_default();
            StatusView {
                node: global::node_label(&label, reply.metadata.as_ref()),
                member: format!("{:016x}", status.member_id),
                db_size: status.db_size,
                db_size_in_use: status.db_size_in_use,
                leader: format!("{:016x}", status.leader),
                raft_index: status.raft_index,
                raft_term: status.raft_term,
                raft_applied_index: status.raft_applied_index,
                learner: status.is_learner,
                errors: status.errors,
            }
        })
        .collect();
    match format {
        OutputFormat::Table => print!("{}", status_table(&views)),
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())
}

pub fn status_table(views: &[StatusView]) -> String {
    let mut rows = vec![
        [
            "NODE",
            "MEMBER",
            "DB SIZE",
            "IN USE",
            "LEADER",
            "RAFT INDEX",
            "RAFT TERM",
            "RAFT APPLIED INDEX",
            "LEARNER",
            "ERRORS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(views.iter().map(|s| {
        let in_use = if s.db_size > 0 {
            s.db_size_in_use as f64 * 100.0 / s.db_size as f64
        } else {
            0.0
        };
        vec![
            s.node.clone(),
            s.member.clone(),
            si_bytes(s.db_size),
            format!("{} ({in_use:.2}%)", si_bytes(s.db_size_in_use)),
            s.leader.clone(),
            s.raft_index.to_string(),
            s.raft_term.to_string(),
            s.raft_applied_index.to_string(),
            s.learner.to_string(),
            s.errors.join(", "),
        ]
    }));
    output::table(&rows)
}

/// Bytes in SI units as upstream prints them: `532 B`, `4.1 kB`, `25 MB`.
fn si_bytes(bytes: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).log10() / 3.0).floor() as usize;
    let value = (bytes as f64 / 1000f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

async fn leave(global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) = global::each(&targets, |t| async move {
        Ok(t.client.etcd_leave_cluster().await?)
    })
    .await;
    for (label, ()) in ok {
        println!("{label}: left etcd");
    }
    global::check_failures(failed, targets.len())
}

async fn forfeit_leadership(global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) = global::each(&targets, |t| async move {
        Ok(t.client.etcd_forfeit_leadership().await?)
    })
    .await;
    for (label, member) in ok {
        if member.is_empty() {
            println!("{label}: not the etcd leader, or no other member to lead");
        } else {
            println!("{label}: etcd leadership moved to {member}");
        }
    }
    global::check_failures(failed, targets.len())
}

async fn remove_member(global: &GlobalArgs, id: u64) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let target = single(&targets, "etcd remove-member")?;
    target
        .client
        .etcd_remove_member_by_id(id)
        .await
        .with_context(|| format!("error removing etcd member {id:016x}"))?;
    println!("{}: removed etcd member {id:016x}", target.label);
    Ok(())
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
    let target = single(&targets, "etcd snapshot")?;
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
    fn sizes_print_in_si_units_like_upstream() {
        let printed: Vec<String> = [0, 9, 532, 4096, 24_576, 1_000_000, 123_456_789]
            .map(si_bytes)
            .to_vec();
        assert_eq!(
            printed,
            ["0 B", "9 B", "532 B", "4.1 kB", "25 kB", "1.0 MB", "124 MB"]
        );
    }

    #[test]
    fn member_ids_are_hex_as_members_prints_them() {
        assert_eq!(
            parse_member_id("8e9e05c52164694d"),
            Ok(0x8e9e_05c5_2164_694d)
        );
        assert_eq!(parse_member_id("0x10"), Ok(16));
        assert!(
            parse_member_id("cp-1")
                .unwrap_err()
                .starts_with("\"cp-1\" is not a member ID in hex")
        );
    }

    #[test]
    fn status_prints_as_upstream_columns() {
        let view = StatusView {
            node: "10.5.0.2".into(),
            member: "8e9e05c52164694d".into(),
            db_size: 24_576,
            db_size_in_use: 12_288,
            leader: "8e9e05c52164694d".into(),
            raft_index: 9,
            raft_term: 2,
            raft_applied_index: 9,
            learner: false,
            errors: vec![],
        };
        assert_eq!(
            status_table(&[view]),
            "NODE       MEMBER             DB SIZE   IN USE           LEADER             RAFT INDEX   RAFT TERM   RAFT APPLIED INDEX   LEARNER   ERRORS\n\
             10.5.0.2   8e9e05c52164694d   25 kB     12 kB (50.00%)   8e9e05c52164694d   9            2           9                    false     \n"
        );
    }

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
