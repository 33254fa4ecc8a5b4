//! `talosctl service [ID [status|start|stop|restart]]`.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};

use crate::global::{self, GlobalArgs, Target};
use crate::output::{self, OutputFormat, ServiceView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ServiceAction {
    /// Show the service state, health and events.
    #[default]
    Status,
    /// Start the service.
    Start,
    /// Stop the service.
    Stop,
    /// Restart the service.
    Restart,
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// Service ID (e.g. apid, etcd, kubelet); without it, list all services.
    pub id: Option<String>,

    /// What to do with the service.
    #[arg(value_enum, requires = "id")]
    pub action: Option<ServiceAction>,

    /// Output format of the list or status.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn list(target: &Target) -> anyhow::Result<Vec<ServiceView>> {
    let list = target.client.service_list().await?;
    let node = global::node_label(&target.label, list.metadata.as_ref());
    Ok(list
        .services
        .iter()
        .map(|s| ServiceView::new(node.clone(), s))
        .collect())
}

/// The actions that change a service.
#[derive(Debug, Clone, Copy)]
enum Control {
    Start,
    Stop,
    Restart,
}

impl ServiceAction {
    fn control(self) -> Option<Control> {
        match self {
            ServiceAction::Status => None,
            ServiceAction::Start => Some(Control::Start),
            ServiceAction::Stop => Some(Control::Stop),
            ServiceAction::Restart => Some(Control::Restart),
        }
    }
}

pub async fn run(global: &GlobalArgs, args: ServiceArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    if let (Some(id), Some(control)) = (&args.id, args.action.unwrap_or_default().control()) {
        return run_control(&targets, id, control).await;
    }

    let (ok, mut failed) = global::each(&targets, |t| async move { list(&t).await }).await;
    let now = unix_now();
    let Some(id) = &args.id else {
        let views: Vec<ServiceView> = ok.into_iter().flat_map(|(_, v)| v).collect();
        match args.output {
            OutputFormat::Table => print!("{}", output::services_table(&views, now)),
            format => print!("{}", output::render(format, &views)?),
        }
        return global::check_failures(failed, targets.len());
    };

    let mut found = Vec::new();
    for (label, views) in ok {
        match views.into_iter().find(|v| &v.id == id) {
            Some(view) => found.push(view),
            None => {
                failed += 1;
                eprintln!("error on node {label}: service {id:?} not found");
            }
        }
    }
    match args.output {
        OutputFormat::Table => {
            let details: Vec<String> = found
                .iter()
                .map(|v| output::service_detail(v, now))
                .collect();
            print!("{}", details.join("\n"));
        }
        format => print!("{}", output::render(format, &found)?),
    }
    global::check_failures(failed, targets.len())
}

async fn run_control(targets: &[Target], id: &str, control: Control) -> anyhow::Result<()> {
    let (ok, failed) = global::each(targets, |t| async move {
        let (metadata, resp) = match control {
            Control::Start => {
                let reply = t.client.service_start(id).await?;
                (reply.metadata, reply.resp)
            }
            Control::Stop => {
                let reply = t.client.service_stop(id).await?;
                (reply.metadata, reply.resp)
            }
            Control::Restart => {
                let reply = t.client.service_restart(id).await?;
                (reply.metadata, reply.resp)
            }
        };
        Ok((global::node_label(&t.label, metadata.as_ref()), resp))
    })
    .await;
    for (_, (node, resp)) in ok {
        println!("{node}: {resp}");
    }
    global::check_failures(failed, targets.len())
}
