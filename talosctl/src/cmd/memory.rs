//! `talosctl memory`.

use clap::Args;

use crate::global::{self, GlobalArgs};
use crate::output::{self, MemoryView, OutputFormat};

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Print every /proc/meminfo value instead of the summary table.
    #[arg(short, long)]
    pub verbose: bool,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub async fn run(global: &GlobalArgs, args: MemoryArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) =
        global::each(&targets, |t| async move { Ok(t.client.memory().await?) }).await;
    let rows: Vec<MemoryView> = ok
        .into_iter()
        .map(|(label, m)| {
            let node = global::node_label(&label, m.metadata.as_ref());
            MemoryView::new(node, &m.meminfo.unwrap_or_default(), args.verbose)
        })
        .collect();
    match args.output {
        OutputFormat::Table if args.verbose => print!("{}", output::memory_verbose(&rows)),
        OutputFormat::Table => print!("{}", output::memory_table(&rows)),
        format => print!("{}", output::render(format, &rows)?),
    }
    global::check_failures(failed, targets.len())
}
