//! `talosctl mounts|mount`.

use clap::Args;
use serde::Serialize;
use talos_proto::machine::MountStat;

use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat};

pub const MOUNTS_EXAMPLES: &str = "\
Examples:
  # Mounted filesystems of a node with their size and use
  talosctl -n 10.5.0.2 mounts

  # The same as JSON, sizes in bytes
  talosctl -n 10.5.0.2 mounts -o json

Sizes are in SI gigabytes (10^9 bytes); USED is SIZE minus AVAILABLE, so it includes blocks
reserved for root. Filesystems of size zero (proc, sysfs, ...) are left out.";

#[derive(Debug, Args)]
pub struct MountsArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One mount of one node, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountView {
    pub node: String,
    pub filesystem: String,
    pub size: u64,
    pub used: u64,
    pub available: u64,
    pub mounted_on: String,
}

impl MountView {
    pub fn new(node: String, stat: &MountStat) -> MountView {
        MountView {
            node,
            filesystem: stat.filesystem.clone(),
            size: stat.size,
            used: stat.size.saturating_sub(stat.available),
            available: stat.available,
            mounted_on: stat.mounted_on.clone(),
        }
    }
}

pub async fn run(global: &GlobalArgs, args: MountsArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) =
        global::each(&targets, |t| async move { Ok(t.client.mounts().await?) }).await;
    let views: Vec<MountView> = ok
        .into_iter()
        .flat_map(|(label, reply)| {
            let node = global::node_label(&label, reply.metadata.as_ref());
            reply
                .stats
                .iter()
                .filter(|s| s.size > 0)
                .map(|s| MountView::new(node.clone(), s))
                .collect::<Vec<_>>()
        })
        .collect();
    match args.output {
        OutputFormat::Table => print!("{}", mounts_table(&views)),
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())
}

/// `NODE FILESYSTEM SIZE(GB) USED(GB) AVAILABLE(GB) PERCENT USED MOUNTED ON`.
pub fn mounts_table(views: &[MountView]) -> String {
    let gb = |bytes: u64| format!("{:.2}", bytes as f64 * 1e-9);
    let mut rows = vec![
        [
            "NODE",
            "FILESYSTEM",
            "SIZE(GB)",
            "USED(GB)",
            "AVAILABLE(GB)",
            "PERCENT USED",
            "MOUNTED ON",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for v in views {
        let percent = 100.0 - 100.0 * (v.available as f64 / v.size as f64);
        rows.push(vec![
            v.node.clone(),
            v.filesystem.clone(),
            gb(v.size),
            gb(v.used),
            gb(v.available),
            format!("{percent:.2}%"),
            v.mounted_on.clone(),
        ]);
    }
    output::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_table_golden() {
        let stats = [
            MountStat {
                filesystem: "/dev/vda4".into(),
                size: 100_000_000,
                available: 75_000_000,
                mounted_on: "/system/state".into(),
            },
            MountStat {
                filesystem: "tmpfs".into(),
                size: 1_024_000_000,
                available: 1_024_000_000,
                mounted_on: "/run".into(),
            },
        ];
        let views: Vec<MountView> = stats
            .iter()
            .map(|s| MountView::new("10.5.0.2".into(), s))
            .collect();
        assert_eq!(
            mounts_table(&views),
            "NODE       FILESYSTEM   SIZE(GB)   USED(GB)   AVAILABLE(GB)   PERCENT USED   MOUNTED ON\n\
             10.5.0.2   /dev/vda4    0.10       0.03       0.08            25.00%         /system/state\n\
             10.5.0.2   tmpfs        1.02       0.00       1.02            0.00%          /run\n"
        );
    }
}
