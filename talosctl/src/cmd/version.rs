//! `talosctl version`.

use clap::Args;

use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat, VersionView};

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print the client version only; do not contact any node.
    #[arg(long)]
    pub client: bool,

    /// Print only the tag of each version.
    #[arg(long)]
    pub short: bool,

    /// Connect without a client certificate and without verifying the server (maintenance mode).
    #[arg(short, long)]
    pub insecure: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// This binary's version block.
pub fn client_version() -> VersionView {
    VersionView {
        node: None,
        tag: format!("v{}", env!("CARGO_PKG_VERSION")),
        sha: option_env!("TALOSCTL_GIT_SHA")
            .unwrap_or("undefined")
            .to_owned(),
        built: String::new(),
        go_version: env!("TALOSCTL_RUSTC_VERSION").to_owned(),
        os: std::env::consts::OS.to_owned(),
        arch: talos_machinery::Arch::host()
            .map(|a| a.as_str())
            .unwrap_or(std::env::consts::ARCH)
            .to_owned(),
        rbac: None,
    }
}

#[derive(Debug, serde::Serialize)]
struct VersionsView {
    client: VersionView,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    servers: Vec<VersionView>,
}

pub async fn run(global: &GlobalArgs, args: VersionArgs) -> anyhow::Result<()> {
    let client = client_version();
    if args.client {
        return print(args.output, args.short, client, Vec::new());
    }
    let targets = global::targets(global, args.insecure).await?;
    let (ok, failed) =
        global::each(&targets, |t| async move { Ok(t.client.version().await?) }).await;
    let servers = ok
        .into_iter()
        .map(|(label, v)| {
            let node = global::node_label(&label, v.metadata.as_ref());
            let info = v.version.unwrap_or_default();
            VersionView::from_server(node, &info, v.features.map(|f| f.rbac))
        })
        .collect();
    print(args.output, args.short, client, servers)?;
    global::check_failures(failed, targets.len())
}

fn print(
    format: OutputFormat,
    short: bool,
    client: VersionView,
    servers: Vec<VersionView>,
) -> anyhow::Result<()> {
    if format != OutputFormat::Table {
        print!(
            "{}",
            output::render(format, &VersionsView { client, servers })?
        );
        return Ok(());
    }
    print!("{}", output::version_block("Client", &client, short));
    for server in &servers {
        print!("{}", output::version_block("Server", server, short));
    }
    Ok(())
}
