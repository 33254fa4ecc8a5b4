//! `talosctl reset`.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{ArgAction, Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use talos_client::{Client, Endpoint, TlsMode};
use talos_proto::machine::{ResetPartitionSpec, ResetRequest, reset_request};
use tokio::task::JoinSet;

use crate::cmd::apply::parse_duration;
use crate::cmd::events;
use crate::global::{self, GlobalArgs};
use crate::output::go_duration;

/// How long one call or connection attempt may take while waiting.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts while waiting.
const POLL_PAUSE: Duration = Duration::from_secs(1);

pub const RESET_EXAMPLES: &str = "\
Examples:
  # Wipe the node's configuration (STATE) and power it off
  talosctl -n 10.5.0.2 reset

  # Wipe STATE and reboot into maintenance mode, waiting until the node answers there
  talosctl -n 10.5.0.2 reset --reboot --system-labels-to-wipe STATE --wait

  # Reset without leaving the cluster gracefully
  talosctl -n 10.5.0.2 reset --graceful=false --reboot

talos-rs nodes wipe STATE (the default when no label is named) and accept the labels STATE,
EPHEMERAL and META; they refuse --user-disks-to-wipe. A graceful reset of a control plane
removes its etcd member first, which etcd refuses for the only member of a cluster: reset a
single control plane with --graceful=false. talos-rs nodes run no kubelet, so there is nothing
to drain. The node answers as soon as the reset has started; --wait follows its events and
reports a reset that fails (such as a graceful one refused by etcd), then watches the node go
down and answer again. Upstream talosctl waits by default; here --wait is off by default.";

/// `--wipe-mode` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum WipeMode {
    /// The system disk and the user disks.
    #[default]
    All,
    /// Only the system disk.
    SystemDisk,
    /// Only the user disks.
    UserDisks,
}

impl From<WipeMode> for reset_request::WipeMode {
    fn from(mode: WipeMode) -> reset_request::WipeMode {
        match mode {
            WipeMode::All => reset_request::WipeMode::All,
            WipeMode::SystemDisk => reset_request::WipeMode::SystemDisk,
            WipeMode::UserDisks => reset_request::WipeMode::UserDisks,
        }
    }
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Leave the cluster first (leave etcd on a control plane; upstream also drains the node);
    /// `--graceful=false` skips that, as a node that is the only etcd member needs.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub graceful: bool,

    /// Reboot after the reset instead of powering off.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub reboot: bool,

    /// Wipe only these system partitions, by label (e.g. STATE,EPHEMERAL), keeping the others.
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    pub system_labels_to_wipe: Vec<String>,

    /// Also wipe these block devices (e.g. /dev/sdb).
    #[arg(long, value_delimiter = ',', value_name = "DEVICES")]
    pub user_disks_to_wipe: Vec<String>,

    /// Which disks to wipe.
    #[arg(long, value_enum, default_value_t)]
    pub wipe_mode: WipeMode,

    /// Wait until the node has gone down and, with --reboot, answers again (in maintenance
    /// mode once STATE was wiped); a reset that fails on the node is reported as an error.
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub wait: bool,

    /// With --wait: how long to wait (e.g. 90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "30m", value_name = "DURATION")]
    pub timeout: Duration,
}

/// The request upstream builds from these flags.
pub fn request(args: &ResetArgs) -> ResetRequest {
    ResetRequest {
        graceful: args.graceful,
        reboot: args.reboot,
        system_partitions_to_wipe: args
            .system_labels_to_wipe
            .iter()
            .map(|label| ResetPartitionSpec {
                label: label.clone(),
                wipe: true,
            })
            .collect(),
        user_disks_to_wipe: args.user_disks_to_wipe.clone(),
        mode: reset_request::WipeMode::from(args.wipe_mode).into(),
    }
}

pub async fn run(global: &GlobalArgs, args: ResetArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let request = request(&args);
    let (ok, mut failed) = global::each(&targets, |t| {
        let request = request.clone();
        async move { Ok((t.client.clone(), t.client.reset(request).await?)) }
    })
    .await;
    let mut waits = Vec::new();
    for (label, (client, reply)) in ok {
        let node = global::node_label(&label, reply.metadata.as_ref());
        println!("{node}: reset requested (actor ID {})", reply.actor_id);
        waits.push((node, client, reply.actor_id));
    }
    if args.wait {
        failed += wait_all(waits, args.reboot, args.timeout).await;
    }
    global::check_failures(failed, targets.len())
}

/// What a reset node was seen doing last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    PoweredOff,
    Configured,
    Maintenance,
}

async fn wait_all(waits: Vec<(String, Client, String)>, reboot: bool, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .expect("valid template");
    let mut tasks = JoinSet::new();
    for (node, client, actor_id) in waits {
        let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
        bar.enable_steady_tick(Duration::from_millis(200));
        tasks.spawn(async move {
            let wait = Wait {
                reboot,
                deadline,
                timeout,
            };
            let result = wait_one(&client, &node, &actor_id, wait, &bar).await;
            bar.finish_and_clear();
            (node, result)
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (node, result) =
            joined.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
        multi.suspend(|| match result {
            Ok(Outcome::PoweredOff) => println!("{node}: powered off"),
            Ok(Outcome::Configured) => println!("{node}: back up"),
            Ok(Outcome::Maintenance) => println!("{node}: back in maintenance mode"),
            Err(err) => {
                failed += 1;
                eprintln!("error on node {node}: {err:#}");
            }
        });
    }
    failed
}

/// Where a node in maintenance mode is dialled: maintenance mode has no routing, so a node
/// addressed through another endpoint is dialled directly on the default port.
fn maintenance_endpoint(node: Option<&str>, endpoint: &Endpoint) -> Endpoint {
    node.and_then(|node| Endpoint::parse(node).ok())
        .filter(|node| node.host() != endpoint.host())
        .unwrap_or_else(|| endpoint.clone())
}

/// How long, and for what, `wait_one` waits.
#[derive(Debug, Clone, Copy)]
struct Wait {
    reboot: bool,
    deadline: Instant,
    timeout: Duration,
}

/// Waits until the node stops answering, failing if the reset fails first (its events say so);
/// then, with `reboot`, until it answers again, with mutual TLS (still configured) or in
/// maintenance mode.
async fn wait_one(
    client: &Client,
    node: &str,
    actor_id: &str,
    Wait {
        reboot,
        deadline,
        timeout,
    }: Wait,
    bar: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let waited = || go_duration(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
    let pause =
        || tokio::time::sleep(POLL_PAUSE.min(deadline.saturating_duration_since(Instant::now())));

    bar.set_message(format!("{node}: waiting for the node to reset"));
    let went_down = async {
        loop {
            if Instant::now() >= deadline {
                bail!("still answering after {} (--timeout)", waited());
            }
            match tokio::time::timeout(CALL_TIMEOUT, client.version()).await {
                Ok(Ok(_)) => pause().await,
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
    };
    tokio::select! {
        down = went_down => down?,
        Some(failure) = events::sequence_failure(client, actor_id) => {
            bail!("the reset failed, and the node stays up: {failure}")
        }
    }
    if !reboot {
        return Ok(Outcome::PoweredOff);
    }

    bar.set_message(format!("{node}: rebooting, waiting for the API"));
    let maintenance = maintenance_endpoint(client.node(), client.endpoint());
    let mut last = None;
    while Instant::now() < deadline {
        let attempt = deadline.min(Instant::now() + CALL_TIMEOUT);
        match client.reconnect_with_retry(attempt).await {
            Ok(fresh) => match tokio::time::timeout(CALL_TIMEOUT, fresh.version()).await {
                Ok(Ok(_)) => return Ok(Outcome::Configured),
                Ok(Err(err)) => last = Some(err.to_string()),
                Err(_) => last = Some(format!("Version did not answer within {CALL_TIMEOUT:?}")),
            },
            Err(err) => last = Some(err.to_string()),
        }
        let attempt = deadline.min(Instant::now() + CALL_TIMEOUT);
        if let Ok(insecure) =
            Client::connect_with_retry(&maintenance, TlsMode::Insecure, attempt).await
            && let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, insecure.version()).await
        {
            return Ok(Outcome::Maintenance);
        }
        pause().await;
    }
    bail!(
        "did not answer again within {} (--timeout); last error: {}",
        waited(),
        last.unwrap_or_else(|| "none".to_owned())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_endpoint_prefers_the_node_address() {
        let endpoint = Endpoint::parse("127.0.0.1:50010").unwrap();
        assert_eq!(maintenance_endpoint(None, &endpoint), endpoint);
        assert_eq!(maintenance_endpoint(Some("127.0.0.1"), &endpoint), endpoint);
        assert_eq!(
            maintenance_endpoint(Some("10.5.0.3"), &endpoint),
            Endpoint::new("10.5.0.3", 50000)
        );
    }

    #[test]
    fn request_fields_follow_the_flags() {
        let args = ResetArgs {
            graceful: false,
            reboot: true,
            system_labels_to_wipe: vec!["STATE".into(), "EPHEMERAL".into()],
            user_disks_to_wipe: vec!["/dev/sdb".into()],
            wipe_mode: WipeMode::SystemDisk,
            wait: false,
            timeout: Duration::from_secs(60),
        };
        assert_eq!(
            request(&args),
            ResetRequest {
                graceful: false,
                reboot: true,
                system_partitions_to_wipe: vec![
                    ResetPartitionSpec {
                        label: "STATE".into(),
                        wipe: true,
                    },
                    ResetPartitionSpec {
                        label: "EPHEMERAL".into(),
                        wipe: true,
                    },
                ],
                user_disks_to_wipe: vec!["/dev/sdb".into()],
                mode: 1,
            }
        );
    }
}
