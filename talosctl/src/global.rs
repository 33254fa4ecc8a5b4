//! Connection flags shared by every node-talking command, talosconfig lookup and target selection.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use talos_client::{Client, Endpoint, TlsMode};
use talos_machinery::talosconfig::Talosconfig;

/// Where talosctl reads the client config inside a Kubernetes pod.
pub const POD_TALOSCONFIG: &str = "/var/run/secrets/talos.dev/config";

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Target nodes; each call is sent once per node with gRPC metadata `node: <addr>`,
    /// so the endpoint's apid forwards it. Defaults to the context's nodes.
    #[arg(
        short = 'n',
        long = "nodes",
        global = true,
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub nodes: Vec<String>,

    /// apid endpoints to dial (`host`, `host:port`, `[v6]:port`; port 50000 by default),
    /// overriding the context's endpoints.
    #[arg(
        short = 'e',
        long = "endpoints",
        global = true,
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub endpoints: Vec<String>,

    /// Client config file. Default: $TALOSCONFIG, else $TALOS_HOME/config, else ~/.talos/config
    /// (or /var/run/secrets/talos.dev/config inside a pod).
    #[arg(long, global = true, value_name = "PATH")]
    pub talosconfig: Option<PathBuf>,

    /// Context of the talosconfig to use instead of its current context.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// Environment values the talosconfig lookup depends on, passed in so the lookup stays testable.
#[derive(Debug, Clone, Default)]
pub struct ConfigEnv {
    pub talosconfig: Option<OsString>,
    pub talos_home: Option<OsString>,
    pub home: Option<OsString>,
}

impl ConfigEnv {
    pub fn from_process() -> ConfigEnv {
        ConfigEnv {
            talosconfig: std::env::var_os("TALOSCONFIG"),
            talos_home: std::env::var_os("TALOS_HOME"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// Picks the talosconfig path: `--talosconfig`, `$TALOSCONFIG`, `$TALOS_HOME/config`,
/// `~/.talos/config`; the pod path is used only when the home default does not exist but it does.
pub fn talosconfig_path(
    flag: Option<&Path>,
    env: &ConfigEnv,
    exists: impl Fn(&Path) -> bool,
) -> anyhow::Result<PathBuf> {
    let non_empty = |value: &Option<OsString>| value.clone().filter(|v| !v.is_empty());
    if let Some(path) = flag {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = non_empty(&env.talosconfig) {
        return Ok(PathBuf::from(path));
    }
    if let Some(dir) = non_empty(&env.talos_home) {
        return Ok(PathBuf::from(dir).join("config"));
    }
    let Some(home) = non_empty(&env.home) else {
        if exists(Path::new(POD_TALOSCONFIG)) {
            return Ok(PathBuf::from(POD_TALOSCONFIG));
        }
        bail!(
            "cannot locate the talosconfig: pass --talosconfig or set $TALOSCONFIG ($HOME is not set)"
        );
    };
    let default = PathBuf::from(home).join(".talos").join("config");
    if !exists(&default) && exists(Path::new(POD_TALOSCONFIG)) {
        return Ok(PathBuf::from(POD_TALOSCONFIG));
    }
    Ok(default)
}

/// One connection and the label shown in the NODE column for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub label: String,
    pub client: Client,
}

/// Connects as the flags ask: mutual TLS from the talosconfig, or `--insecure` maintenance TLS.
pub async fn targets(global: &GlobalArgs, insecure: bool) -> anyhow::Result<Vec<Target>> {
    if insecure {
        return insecure_targets(global).await;
    }
    let path = talosconfig_path(
        global.talosconfig.as_deref(),
        &ConfigEnv::from_process(),
        Path::exists,
    )?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading talosconfig {}", path.display()))?;
    let cfg =
        Talosconfig::from_yaml(&text).with_context(|| format!("talosconfig {}", path.display()))?;
    let (name, ctx) = cfg
        .current(global.context.as_deref())
        .with_context(|| format!("talosconfig {}", path.display()))?;
    if global.endpoints.is_empty() && ctx.effective_endpoints().is_empty() {
        bail!(
            "talosconfig {}: context {name:?} has no endpoints; pass -e/--endpoints",
            path.display()
        );
    }
    let client = Client::from_talosconfig(&cfg, global.context.as_deref(), &global.endpoints)
        .await
        .with_context(|| format!("connecting with context {name:?} of {}", path.display()))?;
    let nodes = if global.nodes.is_empty() {
        ctx.nodes.clone()
    } else {
        global.nodes.clone()
    };
    if nodes.is_empty() {
        return Ok(vec![Target {
            label: client.endpoint().host().to_owned(),
            client,
        }]);
    }
    nodes
        .iter()
        .map(|node| {
            let client = client
                .with_node(node)
                .with_context(|| format!("--nodes {node}"))?;
            Ok(Target {
                label: node.clone(),
                client,
            })
        })
        .collect()
}

/// In maintenance mode there is no node routing: every target is dialled directly.
async fn insecure_targets(global: &GlobalArgs) -> anyhow::Result<Vec<Target>> {
    let addresses = insecure_addresses(&global.nodes, &global.endpoints)?;
    let mut targets = Vec::with_capacity(addresses.len());
    for endpoint in addresses {
        let client = Client::connect(&endpoint, TlsMode::Insecure).await?;
        targets.push(Target {
            label: endpoint.host().to_owned(),
            client,
        });
    }
    Ok(targets)
}

/// With `--insecure` the endpoints are the nodes: `-e` if given, else `-n`; `-n` may not name
/// anything but the endpoints then.
pub fn insecure_addresses(nodes: &[String], endpoints: &[String]) -> anyhow::Result<Vec<Endpoint>> {
    let parse = |flag: &str, list: &[String]| -> anyhow::Result<Vec<Endpoint>> {
        list.iter()
            .map(|text| Endpoint::parse(text).with_context(|| format!("{flag} {text}")))
            .collect()
    };
    let nodes = parse("--nodes", nodes)?;
    let endpoints = parse("--endpoints", endpoints)?;
    if endpoints.is_empty() {
        if nodes.is_empty() {
            bail!(
                "--insecure needs a target: pass -n/--nodes (or -e/--endpoints) with the node address"
            );
        }
        return Ok(nodes);
    }
    for node in &nodes {
        if !endpoints.iter().any(|e| e.host() == node.host()) {
            bail!(
                "--nodes {} differs from --endpoints: maintenance mode (--insecure) cannot route to other nodes",
                node.host()
            );
        }
    }
    Ok(endpoints)
}

/// Runs `call` on every target in order. Failures are reported on stderr as they happen and
/// counted; successes come back with their target's label.
pub async fn each<T, F, Fut>(targets: &[Target], mut call: F) -> (Vec<(String, T)>, usize)
where
    F: FnMut(Target) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut ok = Vec::new();
    let mut failed = 0;
    for target in targets {
        match call(target.clone()).await {
            Ok(value) => ok.push((target.label.clone(), value)),
            Err(err) => {
                failed += 1;
                eprintln!("error on node {}: {err:#}", target.label);
            }
        }
    }
    (ok, failed)
}

/// Fails when any node failed, after the successful results were printed.
pub fn check_failures(failed: usize, total: usize) -> anyhow::Result<()> {
    if failed > 0 {
        bail!("{failed} of {total} node(s) failed");
    }
    Ok(())
}

/// The NODE label for a response element: the hostname apid stamped when it proxied, else the target.
pub fn node_label(target_label: &str, metadata: Option<&talos_proto::common::Metadata>) -> String {
    metadata
        .map(|m| m.hostname.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or(target_label)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(talosconfig: Option<&str>, talos_home: Option<&str>, home: Option<&str>) -> ConfigEnv {
        ConfigEnv {
            talosconfig: talosconfig.map(OsString::from),
            talos_home: talos_home.map(OsString::from),
            home: home.map(OsString::from),
        }
    }

    fn all_exist(_: &Path) -> bool {
        true
    }

    #[test]
    fn talosconfig_path_order() {
        let full = env(Some("/env/cfg"), Some("/th"), Some("/home/u"));
        assert_eq!(
            talosconfig_path(Some(Path::new("/flag")), &full, all_exist).unwrap(),
            PathBuf::from("/flag")
        );
        assert_eq!(
            talosconfig_path(None, &full, all_exist).unwrap(),
            PathBuf::from("/env/cfg")
        );
        let no_env = env(None, Some("/th"), Some("/home/u"));
        assert_eq!(
            talosconfig_path(None, &no_env, all_exist).unwrap(),
            PathBuf::from("/th/config")
        );
        let empty_env = env(Some(""), Some(""), Some("/home/u"));
        assert_eq!(
            talosconfig_path(None, &empty_env, all_exist).unwrap(),
            PathBuf::from("/home/u/.talos/config")
        );
    }

    #[test]
    fn pod_path_only_when_home_default_missing() {
        let home = env(None, None, Some("/home/u"));
        let only_pod = |p: &Path| p == Path::new(POD_TALOSCONFIG);
        assert_eq!(
            talosconfig_path(None, &home, only_pod).unwrap(),
            PathBuf::from(POD_TALOSCONFIG)
        );
        let nothing = |_: &Path| false;
        assert_eq!(
            talosconfig_path(None, &home, nothing).unwrap(),
            PathBuf::from("/home/u/.talos/config")
        );
        let err = talosconfig_path(None, &env(None, None, None), nothing).unwrap_err();
        assert!(err.to_string().contains("--talosconfig"), "{err}");
    }

    #[test]
    fn insecure_uses_nodes_as_endpoints() {
        let nodes = vec!["10.0.0.2".to_owned()];
        let got = insecure_addresses(&nodes, &[]).unwrap();
        assert_eq!(got, vec![Endpoint::new("10.0.0.2", 50000)]);

        let endpoints = vec!["10.0.0.2:50010".to_owned()];
        let got = insecure_addresses(&nodes, &endpoints).unwrap();
        assert_eq!(got, vec![Endpoint::new("10.0.0.2", 50010)]);

        let other = vec!["10.0.0.3".to_owned()];
        let err = insecure_addresses(&other, &endpoints).unwrap_err();
        assert!(err.to_string().contains("--nodes 10.0.0.3"), "{err}");

        let err = insecure_addresses(&[], &[]).unwrap_err();
        assert!(err.to_string().contains("-n/--nodes"), "{err}");

        let bad = vec!["host:0".to_owned()];
        let err = insecure_addresses(&bad, &[]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--nodes host:0: Invalid endpoint \"host:0\": bad port"
        );
    }
}
