//! `talosctl hostname`.

use crate::global::{self, GlobalArgs};
use crate::output;

pub async fn run(global: &GlobalArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) =
        global::each(&targets, |t| async move { Ok(t.client.hostname().await?) }).await;
    if targets.len() == 1 {
        for (_, hostname) in &ok {
            println!("{hostname}");
        }
    } else {
        let mut rows = vec![vec!["NODE".to_owned(), "HOSTNAME".to_owned()]];
        rows.extend(ok.into_iter().map(|(node, hostname)| vec![node, hostname]));
        print!("{}", output::table(&rows));
    }
    global::check_failures(failed, targets.len())
}
