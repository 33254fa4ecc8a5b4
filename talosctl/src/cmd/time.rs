//! `talosctl time [--check SERVER]`.

use anyhow::anyhow;
use clap::Args;
use serde::Serialize;
use talos_proto::time::Time;

use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat, UtcTime};

pub const TIME_EXAMPLES: &str = "\
Examples:
  # The node's clock next to its configured time server's
  talosctl -n 10.5.0.2 time

  # The node's clock next to another NTP server's, asked by the node
  talosctl -n 10.5.0.2 time --check time.cloudflare.com";

#[derive(Debug, Args)]
pub struct TimeArgs {
    /// Compare with this NTP server (name or address) instead of the node's configured one.
    #[arg(long = "check", value_name = "SERVER")]
    pub check: Option<String>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One node's answer; the times in RFC 3339 (UTC) plus nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeView {
    pub node: String,
    pub server: String,
    pub node_time: String,
    pub server_time: String,
    /// NTP-SERVER-TIME minus NODE-TIME, in milliseconds (as sampled by the node).
    pub offset_ms: i64,
    #[serde(skip)]
    node_time_go: String,
    #[serde(skip)]
    server_time_go: String,
}

impl TimeView {
    pub fn new(node: String, time: &Time) -> anyhow::Result<TimeView> {
        let local = time
            .localtime
            .as_ref()
            .ok_or_else(|| anyhow!("node {node}: error parsing local time"))?;
        let remote = time
            .remotetime
            .as_ref()
            .ok_or_else(|| anyhow!("node {node}: error parsing remote time"))?;
        let millis = |t: &talos_proto::prost_types::Timestamp| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos / 1_000_000))
        };
        let rfc = |t: &talos_proto::prost_types::Timestamp| {
            let base = UtcTime::from_unix(t.seconds).rfc3339();
            format!("{}.{:09}Z", base.trim_end_matches('Z'), t.nanos.max(0))
        };
        Ok(TimeView {
            server: time.server.clone(),
            node_time: rfc(local),
            server_time: rfc(remote),
            offset_ms: millis(remote).saturating_sub(millis(local)),
            node_time_go: output::go_utc_string(local.seconds, local.nanos),
            server_time_go: output::go_utc_string(remote.seconds, remote.nanos),
            node,
        })
    }
}

pub async fn run(global: &GlobalArgs, args: TimeArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let check = args.check.as_deref();
    let (ok, mut failed) = global::each(&targets, |t| async move {
        Ok(match check {
            Some(server) => t.client.time_check(server).await?,
            None => t.client.node_time().await?,
        })
    })
    .await;
    let mut views = Vec::new();
    for (label, reply) in ok {
        let node = global::node_label(&label, reply.metadata.as_ref());
        match TimeView::new(node, &reply) {
            Ok(view) => views.push(view),
            Err(err) => {
                failed += 1;
                eprintln!("error: {err}");
            }
        }
    }
    match args.output {
        OutputFormat::Table => print!("{}", time_table(&views)),
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())
}

/// `NODE NTP-SERVER NODE-TIME NTP-SERVER-TIME`, times as Go prints them.
pub fn time_table(views: &[TimeView]) -> String {
    let mut rows = vec![
        ["NODE", "NTP-SERVER", "NODE-TIME", "NTP-SERVER-TIME"]
            .map(String::from)
            .to_vec(),
    ];
    for v in views {
        rows.push(vec![
            v.node.clone(),
            v.server.clone(),
            v.node_time_go.clone(),
            v.server_time_go.clone(),
        ]);
    }
    output::table(&rows)
}

#[cfg(test)]
mod tests {
    use talos_proto::prost_types::Timestamp;

    use super::*;

    #[test]
    fn time_table_golden() {
        let time = Time {
            metadata: None,
            server: "pool.ntp.org".into(),
            localtime: Some(Timestamp {
                seconds: 1_715_000_000,
                nanos: 500_000_000,
            }),
            remotetime: Some(Timestamp {
                seconds: 1_715_000_001,
                nanos: 250_000_000,
            }),
        };
        let view = TimeView::new("10.5.0.2".into(), &time).unwrap();
        assert_eq!(view.offset_ms, 750);
        assert_eq!(view.node_time, "2024-05-06T12:53:20.500000000Z");
        assert_eq!(
            time_table(&[view]),
            "NODE       NTP-SERVER     NODE-TIME                         NTP-SERVER-TIME\n\
             10.5.0.2   pool.ntp.org   2024-05-06 12:53:20.5 +0000 UTC   2024-05-06 12:53:21.25 +0000 UTC\n"
        );
        let missing = Time {
            localtime: None,
            ..time
        };
        assert_eq!(
            TimeView::new("n".into(), &missing).unwrap_err().to_string(),
            "node n: error parsing local time"
        );
    }
}
