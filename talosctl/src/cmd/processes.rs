//! `talosctl processes|ps`.

use clap::{Args, ValueEnum};
use serde::Serialize;
use talos_proto::machine::ProcessInfo;

use crate::global::{self, GlobalArgs};
use crate::output::{self, OutputFormat};

pub const PROCESSES_EXAMPLES: &str = "\
Examples:
  # Processes of a node, biggest resident memory first
  talosctl -n 10.5.0.2 processes

  # Two nodes, most CPU time first
  talosctl -n 10.5.0.2,10.5.0.3 ps -s cpu

VIRTMEM and RESMEM are in SI units (1 MB = 1000000 bytes); CPU-TIME is user plus system
seconds.";

/// `-s/--sort` choices; both sort descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum SortBy {
    /// Resident memory.
    #[default]
    Rss,
    /// CPU time.
    Cpu,
}

#[derive(Debug, Args)]
pub struct ProcessesArgs {
    /// Column to sort the output by (descending).
    #[arg(short, long, value_enum, default_value_t)]
    pub sort: SortBy,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One process of one node; memory in bytes, CPU time in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessView {
    pub node: String,
    pub pid: i32,
    pub ppid: i32,
    pub state: String,
    pub threads: i32,
    pub cpu_time: f64,
    pub virtual_memory: u64,
    pub resident_memory: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// The command line as the COMMAND column shows it.
    pub command: String,
}

impl ProcessView {
    pub fn new(node: String, p: &ProcessInfo) -> ProcessView {
        ProcessView {
            node,
            pid: p.pid,
            ppid: p.ppid,
            state: p.state.clone(),
            threads: p.threads,
            cpu_time: p.cpu_time,
            virtual_memory: p.virtual_memory,
            resident_memory: p.resident_memory,
            label: p.label.clone(),
            command: command_line(p),
        }
    }
}

/// Upstream's COMMAND: the arguments with the first one replaced by the executable's path when
/// it names the same program, the bare command name when there is no executable; characters
/// outside printable ASCII become spaces.
pub fn command_line(p: &ProcessInfo) -> String {
    let first_arg = p.args.split_whitespace().next();
    let executable = p.executable.split_whitespace().next().unwrap_or("");
    let base = executable.rsplit('/').next().unwrap_or(executable);
    let text = match first_arg {
        _ if p.executable.is_empty() => p.command.clone(),
        Some(first) if first == base => p.args.replacen(first, &p.executable, 1),
        _ => p.args.clone(),
    };
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
        .collect()
}

/// Sorts one node's processes, descending, as upstream does.
pub fn sort(processes: &mut [ProcessInfo], by: SortBy) {
    match by {
        SortBy::Rss => processes.sort_by_key(|p| std::cmp::Reverse(p.resident_memory)),
        SortBy::Cpu => processes.sort_by(|a, b| b.cpu_time.total_cmp(&a.cpu_time)),
    }
}

pub async fn run(global: &GlobalArgs, args: ProcessesArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let (ok, failed) =
        global::each(&targets, |t| async move { Ok(t.client.processes().await?) }).await;
    let mut views = Vec::new();
    for (label, mut reply) in ok {
        let node = global::node_label(&label, reply.metadata.as_ref());
        sort(&mut reply.processes, args.sort);
        views.extend(
            reply
                .processes
                .iter()
                .map(|p| ProcessView::new(node.clone(), p)),
        );
    }
    match args.output {
        OutputFormat::Table => print!("{}", processes_table(&views)),
        format => print!("{}", output::render(format, &views)?),
    }
    global::check_failures(failed, targets.len())
}

/// `NODE PID STATE THREADS CPU-TIME VIRTMEM RESMEM LABEL COMMAND`.
pub fn processes_table(views: &[ProcessView]) -> String {
    let mut rows = vec![
        [
            "NODE", "PID", "STATE", "THREADS", "CPU-TIME", "VIRTMEM", "RESMEM", "LABEL", "COMMAND",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for v in views {
        rows.push(vec![
            v.node.clone(),
            v.pid.to_string(),
            v.state.clone(),
            v.threads.to_string(),
            format!("{:.2}", v.cpu_time),
            output::humanize_bytes(v.virtual_memory),
            output::humanize_bytes(v.resident_memory),
            v.label.clone(),
            v.command.clone(),
        ]);
    }
    output::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: i32, rss: u64, cpu: f64, command: &str, exe: &str, args: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            state: "S".into(),
            threads: 2,
            cpu_time: cpu,
            virtual_memory: 20_000_000,
            resident_memory: rss,
            command: command.into(),
            executable: exe.into(),
            args: args.into(),
            label: String::new(),
        }
    }

    #[test]
    fn command_column_follows_upstream() {
        assert_eq!(
            command_line(&process(1, 0, 0.0, "kthreadd", "", "")),
            "kthreadd"
        );
        assert_eq!(
            command_line(&process(1, 0, 0.0, "init", "/sbin/init", "init --flag")),
            "/sbin/init --flag"
        );
        assert_eq!(
            command_line(&process(1, 0, 0.0, "sh", "/bin/busybox", "sh -c\u{7}x")),
            "sh -c x"
        );
    }

    #[test]
    fn sorted_table_golden() {
        let mut list = vec![
            process(1, 5_000_000, 1.5, "machined", "/init", "/init"),
            process(42, 9_000_000, 0.25, "sh", "", ""),
        ];
        sort(&mut list, SortBy::Rss);
        assert_eq!(list[0].pid, 42);
        sort(&mut list, SortBy::Cpu);
        assert_eq!(list[0].pid, 1);
        let views: Vec<ProcessView> = list
            .iter()
            .map(|p| ProcessView::new("10.5.0.2".into(), p))
            .collect();
        assert_eq!(
            processes_table(&views),
            "NODE       PID   STATE   THREADS   CPU-TIME   VIRTMEM   RESMEM   LABEL   COMMAND\n\
             10.5.0.2   1     S       2         1.50       20 MB     5.0 MB           /init\n\
             10.5.0.2   42    S       2         0.25       20 MB     9.0 MB           sh\n"
        );
    }
}
