//! `talosctl upgrade` and `talosctl rollback`.

use std::time::{Duration, Instant};

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use talos_client::{Client, ClientError};
use talos_proto::machine::{UpgradeRequest, Version, upgrade_request};
use tokio::task::JoinSet;

use crate::cmd::apply::parse_duration;
use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat, go_duration};

/// How long one Version call may take while waiting; a host that lost power never answers.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between Version calls while waiting.
const POLL_PAUSE: Duration = Duration::from_secs(1);

pub const UPGRADE_EXAMPLES: &str = "\
Examples:
  # Upgrade one node from a registry; return once it has acknowledged
  talosctl upgrade -n 10.5.0.2 --image 10.5.0.1:5000/talos/installer:v2.0.0

  # Upgrade two nodes and wait up to 15 minutes for both to come back
  talosctl upgrade -n 10.5.0.2,10.5.0.3 -i 10.5.0.1:5000/talos/installer:v2.0.0 --wait --timeout 15m

  # Upgrade from an installer on this machine (written by `cargo xtask installer`), served
  # to the node from this machine's address 10.5.0.1, with the result as JSON
  talosctl upgrade -n 10.5.0.2 -i out/installers/arm64/v2.0.0 --serve-address 10.5.0.1 -o json

The node pulls through the mirrors in machine.registries.mirrors.<host> (or a
RegistryMirrorConfig document; `*` matches any registry) in order, then from the registry
itself unless skipFallback is set. Registries speak HTTPS, trusting public roots or the CA
in machine.registries.config.<host:port>.tls.ca (or a RegistryTLSConfig document;
tls.insecureSkipVerify: true skips the check) and presenting tls.clientIdentity when the
registry asks for a client certificate; an IP address with a port other than 443 and
no such tls entry means plain HTTP. Credentials come from machine.registries.config.<host>.auth
(username and password, auth, or identityToken) or a RegistryAuthConfig document, for Basic
and token logins; without them, anonymous tokens (as ghcr.io gives for public images). Names
resolve through machine.network.extraHostEntries, then the node's nameservers.

  # Write v2.0.0 to the other slot now; it boots at the next reboot
  talosctl upgrade -n 10.5.0.2 -i 10.5.0.1:5000/talos/installer:v2.0.0 --stage";

pub const ROLLBACK_EXAMPLES: &str = "\
Examples:
  # Return a node to the version it ran before its last upgrade
  talosctl rollback -n 10.5.0.2

  # The same for two nodes, as YAML
  talosctl rollback -n 10.5.0.2,10.5.0.3 -o yaml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpgradeRebootMode {
    /// Reboot through the firmware (talos-rs nodes do not kexec).
    Default,
    /// Full power cycle through the firmware (on talos-rs nodes the same as default).
    Powercycle,
}

impl From<UpgradeRebootMode> for upgrade_request::RebootMode {
    fn from(mode: UpgradeRebootMode) -> upgrade_request::RebootMode {
        match mode {
            UpgradeRebootMode::Default => upgrade_request::RebootMode::Default,
            UpgradeRebootMode::Powercycle => upgrade_request::RebootMode::Powercycle,
        }
    }
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Installer image to upgrade to: a registry reference (e.g.
    /// 10.0.0.5:5000/talos/installer:v2.0.0), or a local OCI image layout (directory) or its
    /// tarball, which this command serves to the nodes itself (see --serve-address).
    #[arg(short, long, value_name = "REF|PATH")]
    pub image: String,

    /// With a local --image: the address the nodes reach this machine at, `HOST` or
    /// `HOST:PORT` (e.g. 192.168.1.10, or 10.0.2.2 from a QEMU guest on user networking).
    /// The image is served read-only there until every node has pulled it.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub serve_address: Option<String>,

    /// Stage the upgrade: the node writes the new version to its other slot now and boots it at
    /// its next reboot, whatever causes that; it does not reboot now.
    #[arg(short, long, conflicts_with = "wait")]
    pub stage: bool,

    /// Skip the node's pre-upgrade safety checks (upstream: etcd health); may lose data.
    #[arg(short, long)]
    pub force: bool,

    /// Keep the node's ephemeral data (/var) across the upgrade.
    #[arg(short, long)]
    pub preserve: bool,

    /// How the node reboots into the new version.
    #[arg(short = 'm', long, value_enum, default_value = "default")]
    pub reboot_mode: UpgradeRebootMode,

    /// Wait until every node has rebooted and answers the API again, then print its version.
    #[arg(long)]
    pub wait: bool,

    /// With --wait: how long to wait for the nodes to come back (e.g. 90s, 10m, 1h).
    #[arg(
        long,
        value_parser = parse_duration,
        default_value = "10m",
        value_name = "DURATION",
        requires = "wait"
    )]
    pub timeout: Duration,

    /// Output format of the per-node results.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Output format of the per-node results.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One node's upgrade, as `-o json|yaml` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct UpgradeView {
    node: String,
    ack: String,
    actor_id: String,
    /// With --wait: the tag before the upgrade and the tag the node came back on.
    #[serde(skip_serializing_if = "Option::is_none")]
    tag_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct RollbackView {
    node: String,
}

fn tag(version: &Version) -> String {
    version
        .version
        .as_ref()
        .map(|v| v.tag.clone())
        .unwrap_or_default()
}

/// A local installer (OCI layout directory or tarball), served while the nodes pull it.
struct LocalInstaller {
    reference: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for LocalInstaller {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve_local(path: &Path, serve_address: Option<&str>) -> anyhow::Result<LocalInstaller> {
    let image = if path.is_dir() {
        talos_oci::read_layout_dir(path)
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("--image {}: opening the tarball", path.display()))?;
        talos_oci::read_layout_tar(std::io::BufReader::new(file))
    }
    .with_context(|| format!("--image {}: not an OCI image layout", path.display()))?;
    let Some(address) = serve_address else {
        bail!(
            "--image {} is a local installer, which this machine serves to the nodes: give \
             --serve-address with an address the nodes reach this machine at (e.g. \
             192.168.1.10, or 10.0.2.2 from a QEMU guest on user networking)",
            path.display()
        );
    };
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
            host.to_owned(),
            port.parse::<u16>()
                .with_context(|| format!("--serve-address {address}: the port is not a number"))?,
        ),
        _ => (address.to_owned(), 0),
    };
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("--serve-address {address}: binding port {port}"))?;
    let port = listener.local_addr()?.port();
    let reference = format!(
        "{host}:{port}/{}@{}",
        talos_oci::serve::REPOSITORY,
        image.manifest_digest()
    );
    eprintln!("serving {} as {reference}", path.display());
    let server = tokio::spawn(talos_oci::serve::serve(Arc::new(image), listener));
    Ok(LocalInstaller { reference, server })
}

pub async fn upgrade(global: &GlobalArgs, args: UpgradeArgs) -> anyhow::Result<()> {
    let local = if Path::new(&args.image).exists() {
        Some(serve_local(Path::new(&args.image), args.serve_address.as_deref()).await?)
    } else {
        None
    };
    let image = local
        .as_ref()
        .map_or_else(|| args.image.clone(), |l| l.reference.clone());
    let targets = global::targets(global, false).await?;
    let request = UpgradeRequest {
        image,
        preserve: args.preserve,
        stage: args.stage,
        force: args.force,
        reboot_mode: upgrade_request::RebootMode::from(args.reboot_mode).into(),
    };
    let wait = args.wait;
    let (ok, mut failed) = global::each(&targets, |t| {
        let request = request.clone();
        async move {
            let before = if wait {
                Some(t.client.version().await?)
            } else {
                None
            };
            let reply = t.client.upgrade(request).await?;
            Ok((t.client, before, reply))
        }
    })
    .await;

    let mut views = Vec::new();
    let mut waits = Vec::new();
    for (label, (client, before, reply)) in ok {
        let node = global::node_label(&label, reply.metadata.as_ref());
        if args.output == OutputFormat::Table {
            println!(
                "{node}: upgrade requested: {} (actor ID {})",
                reply.ack, reply.actor_id
            );
        }
        views.push(UpgradeView {
            node,
            ack: reply.ack,
            actor_id: reply.actor_id,
            tag_before: before.as_ref().map(tag),
            tag_after: None,
        });
        waits.extend(before.map(|before| (client, before)));
    }
    if wait {
        failed += wait_all(&mut views, waits, args.timeout, args.output).await;
    }
    if args.output != OutputFormat::Table {
        print!("{}", output::render(args.output, &views)?);
    }
    global::check_failures(failed, targets.len())
}

/// Waits for all nodes at once, since they reboot at the same time; fills in `tag_after` and
/// returns how many did not come back.
async fn wait_all(
    views: &mut [UpgradeView],
    waits: Vec<(Client, Version)>,
    timeout: Duration,
    format: OutputFormat,
) -> usize {
    let deadline = Instant::now() + timeout;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .expect("valid template");
    let mut tasks = JoinSet::new();
    for (index, (client, before)) in waits.into_iter().enumerate() {
        let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
        bar.enable_steady_tick(Duration::from_millis(200));
        let node = views[index].node.clone();
        tasks.spawn(async move {
            let result = wait_back(&client, &before, &node, deadline, timeout, &bar).await;
            bar.finish_and_clear();
            (index, before, result)
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (index, before, result) =
            joined.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
        let view = &mut views[index];
        match result {
            Ok(after) => {
                let tag_after = tag(&after);
                multi.suspend(|| {
                    if after.version == before.version {
                        eprintln!(
                            "warning: {} came back on the version it ran before ({tag_after})",
                            view.node
                        );
                    }
                    if format == OutputFormat::Table {
                        println!("{}: back on {tag_after}", view.node);
                    }
                });
                view.tag_after = Some(tag_after);
            }
            Err(err) => {
                failed += 1;
                multi.suspend(|| eprintln!("error on node {}: {err:#}", view.node));
            }
        }
    }
    failed
}

/// Waits until the node stops answering (it reboots for the upgrade), then until it answers
/// Version again. A different version answering counts as back even if the outage was missed.
async fn wait_back(
    client: &Client,
    before: &Version,
    node: &str,
    deadline: Instant,
    timeout: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<Version> {
    let waited = || go_duration(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
    let pause =
        || tokio::time::sleep(POLL_PAUSE.min(deadline.saturating_duration_since(Instant::now())));

    bar.set_message(format!("{node}: waiting for the node to reboot"));
    loop {
        if Instant::now() >= deadline {
            bail!(
                "still answering on {} after {} (--timeout): the node did not reboot; last error: none",
                tag(before),
                waited()
            );
        }
        match tokio::time::timeout(CALL_TIMEOUT, client.version()).await {
            Ok(Ok(now)) if now.version != before.version => return Ok(now),
            Ok(Ok(_)) => pause().await,
            Ok(Err(_)) | Err(_) => break,
        }
    }

    bar.set_message(format!("{node}: rebooting, waiting for the API"));
    let mut last = None;
    loop {
        match client.reconnect_with_retry(deadline).await {
            Ok(fresh) => match tokio::time::timeout(CALL_TIMEOUT, fresh.version()).await {
                Ok(Ok(version)) => return Ok(version),
                Ok(Err(err)) if err.is_transient() => last = Some(err.to_string()),
                Ok(Err(err)) => return Err(err.into()),
                Err(_) => last = Some(format!("Version did not answer within {CALL_TIMEOUT:?}")),
            },
            Err(ClientError::Timeout { last: seen, .. }) => {
                let last = seen
                    .map(|err| err.to_string())
                    .or(last)
                    .unwrap_or_else(|| "none".to_owned());
                bail!(
                    "did not answer again within {} (--timeout); last error: {last}",
                    waited()
                );
            }
            Err(err) => return Err(err.into()),
        }
        pause().await;
    }
}

pub async fn rollback(global: &GlobalArgs, args: RollbackArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) =
        global::each(&targets, |t| async move { Ok(t.client.rollback().await?) }).await;
    let views: Vec<RollbackView> = ok
        .into_iter()
        .map(|(label, reply)| RollbackView {
            node: global::node_label(&label, reply.metadata.as_ref()),
        })
        .collect();
    match args.output {
        OutputFormat::Table => {
            for view in &views {
                println!(
                    "{}: rollback requested, rebooting into the previous version",
                    view.node
                );
            }
        }
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &Path) -> std::path::PathBuf {
        let image = talos_oci::installer_image("arm64", b"k".to_vec(), b"i".to_vec()).unwrap();
        let path = dir.join("installer");
        talos_oci::write_layout_dir(&image, &path).unwrap();
        path
    }

    #[tokio::test]
    async fn a_local_installer_needs_an_address_the_nodes_reach() {
        let dir = tempfile::tempdir().unwrap();
        let path = layout(dir.path());
        let err = serve_local(&path, None).await.err().unwrap();
        assert!(err.to_string().contains("give --serve-address"), "{err}");
        let err = serve_local(dir.path(), Some("10.0.2.2"))
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("not an OCI image layout"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn a_local_installer_is_served_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = layout(dir.path());
        let local = serve_local(&path, Some("127.0.0.1")).await.unwrap();
        let reference = talos_oci::Reference::parse(&local.reference).unwrap();
        assert!(reference.digest().is_some(), "{}", local.reference);
        let files = talos_oci::Registry::for_reference(&reference)
            .unwrap()
            .pull_files(&reference, "arm64", &["usr/install/arm64/vmlinuz"], 1 << 20)
            .await
            .unwrap();
        assert_eq!(files["usr/install/arm64/vmlinuz"], b"k");
    }
}
