//! `talosctl events`: the node's runtime events (sequences, phases, tasks, services) as they
//! happen.

use clap::Args;
use prost::Message;
use talos_client::Client;
use talos_proto::machine::{
    EventsRequest, MachineStatusEvent, PhaseEvent, SequenceEvent, ServiceStateEvent, TaskEvent,
    phase_event, sequence_event, service_state_event, task_event,
};
use tokio::sync::watch;

use crate::global::{self, GlobalArgs, Target};

pub const EVENTS_EXAMPLES: &str = "\
Examples:
  # Follow new events (Ctrl-C to stop)
  talosctl -n 10.5.0.2 events

  # Everything the node remembers (its last 1,000 events), then new ones
  talosctl -n 10.5.0.2 events --tail -1

  # What one reboot did: its actor ID is printed by `talosctl reboot`
  talosctl -n 10.5.0.2 events --tail -1 --actor-id 3f2a...";

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// How many past events to show first; -1 shows all the node keeps, 0 none.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub tail: i32,

    /// Show past events after this event ID.
    #[arg(long, value_name = "ID")]
    pub since: Option<String>,

    /// Show past events from this many seconds back.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<i32>,

    /// Only events caused by this actor (the ID reboot, reset or upgrade print).
    #[arg(long, value_name = "ID")]
    pub actor_id: Option<String>,
}

/// The event's kind and a one-line description.
pub fn describe(type_url: &str, value: &[u8]) -> (String, String) {
    let kind = type_url.rsplit('/').next().unwrap_or(type_url).to_owned();
    let message = match kind.as_str() {
        "machine.SequenceEvent" => SequenceEvent::decode(value).ok().map(|e| {
            let action =
                sequence_event::Action::try_from(e.action).map_or("?", |a| a.as_str_name());
            match e.error {
                Some(err) => format!("{} {action}: {}", e.sequence, err.message),
                None => format!("{} {action}", e.sequence),
            }
        }),
        "machine.PhaseEvent" => PhaseEvent::decode(value).ok().map(|e| {
            let action = phase_event::Action::try_from(e.action).map_or("?", |a| a.as_str_name());
            format!("{} {action}", e.phase)
        }),
        "machine.TaskEvent" => TaskEvent::decode(value).ok().map(|e| {
            let action = task_event::Action::try_from(e.action).map_or("?", |a| a.as_str_name());
            format!("{} {action}", e.task)
        }),
        "machine.ServiceStateEvent" => ServiceStateEvent::decode(value).ok().map(|e| {
            let action =
                service_state_event::Action::try_from(e.action).map_or("?", |a| a.as_str_name());
            format!("{} {action}: {}", e.service, e.message)
        }),
        "machine.MachineStatusEvent" => MachineStatusEvent::decode(value)
            .ok()
            .map(|e| format!("stage {}", e.stage)),
        _ => None,
    };
    (kind, message.unwrap_or_else(|| "(not decoded)".to_owned()))
}

/// The error the sequence `actor_id` started ends with, once it ends with one; `None` when it
/// ends well or the node stops sending events (it went down).
pub async fn sequence_failure(client: &Client, actor_id: &str) -> Option<String> {
    let request = EventsRequest {
        tail_events: -1,
        with_actor_id: actor_id.to_owned(),
        ..Default::default()
    };
    let mut events = client
        .machine()
        .events(client.request(request))
        .await
        .ok()?
        .into_inner();
    while let Ok(Some(event)) = events.message().await {
        let Some(stop) = event
            .data
            .filter(|any| any.type_url.ends_with("/machine.SequenceEvent"))
            .and_then(|any| SequenceEvent::decode(&any.value[..]).ok())
            .filter(|e| e.action == sequence_event::Action::Stop as i32)
        else {
            continue;
        };
        return stop
            .error
            .map(|e| format!("{}: {}", stop.sequence, e.message));
    }
    None
}

pub async fn run(global: &GlobalArgs, args: EventsArgs) -> anyhow::Result<()> {
    let targets = global::targets(global, false).await?;
    let request = EventsRequest {
        tail_events: args.tail,
        tail_id: args.since.unwrap_or_default(),
        tail_seconds: args.duration.unwrap_or_default(),
        with_actor_id: args.actor_id.unwrap_or_default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    println!("NODE\tID\tEVENT\tACTOR\tMESSAGE");
    let mut tasks = Vec::with_capacity(targets.len());
    for target in targets.clone() {
        tasks.push(tokio::spawn(follow(
            target,
            request.clone(),
            stop_rx.clone(),
        )));
    }
    let mut failed = 0;
    for (task, target) in tasks.into_iter().zip(&targets) {
        if let Err(err) = task.await.map_err(anyhow::Error::from).and_then(|r| r) {
            failed += 1;
            eprintln!("error on node {}: {err:#}", target.label);
        }
    }
    interrupt.abort();
    global::check_failures(failed, targets.len())
}

async fn follow(
    target: Target,
    request: EventsRequest,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = &target.client;
    let mut events = client
        .machine()
        .events(client.request(request))
        .await?
        .into_inner();
    loop {
        let event = tokio::select! {
            event = events.message() => event,
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        };
        let Some(event) = event? else {
            return Ok(());
        };
        let (kind, message) = event.data.as_ref().map_or(("-".into(), "-".into()), |any| {
            describe(&any.type_url, &any.value)
        });
        let node = global::node_label(&target.label, event.metadata.as_ref());
        let actor = if event.actor_id.is_empty() {
            "-"
        } else {
            &event.actor_id
        };
        println!("{node}\t{}\t{kind}\t{actor}\t{message}", event.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_events_machined_sends() {
        let seq = SequenceEvent {
            sequence: "reboot".into(),
            action: sequence_event::Action::Start as i32,
            error: None,
        };
        assert_eq!(
            describe("talos/runtime/machine.SequenceEvent", &seq.encode_to_vec()),
            ("machine.SequenceEvent".into(), "reboot START".into())
        );
        let task = TaskEvent {
            task: "PullInstaller".into(),
            action: task_event::Action::Stop as i32,
        };
        assert_eq!(
            describe("talos/runtime/machine.TaskEvent", &task.encode_to_vec()).1,
            "PullInstaller STOP"
        );
        let service = ServiceStateEvent {
            service: "etcd".into(),
            action: service_state_event::Action::Waiting as i32,
            message: "Waiting for service network to be up".into(),
            health: None,
        };
        assert_eq!(
            describe(
                "talos/runtime/machine.ServiceStateEvent",
                &service.encode_to_vec()
            )
            .1,
            "etcd WAITING: Waiting for service network to be up"
        );
        assert_eq!(
            describe("talos/runtime/other.Thing", b"").1,
            "(not decoded)"
        );
    }
}
