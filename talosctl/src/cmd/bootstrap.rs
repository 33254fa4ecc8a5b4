//! `talosctl bootstrap`: start etcd on one control-plane node as a new cluster.

use crate::global::{self, GlobalArgs};

pub async fn run(global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    anyhow::ensure!(
        targets.len() == 1,
        "bootstrap must target exactly one control-plane node (got {}): etcd is started once, on one node, and the others join it",
        targets.len()
    );
    let (_, failed) =
        global::each(&targets, |t| async move { Ok(t.client.bootstrap().await?) }).await;
    global::check_failures(failed, targets.len())
}
