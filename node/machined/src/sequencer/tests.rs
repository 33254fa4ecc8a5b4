use prost::Message;
use talos_proto::machine::{self as pb, EventsRequest};

use super::*;

#[derive(Default)]
struct Recorder {
    ran: Vec<Task>,
    fail_at: Option<Task>,
}

impl Tasks for Recorder {
    async fn run(&mut self, task: Task) -> Result<(), String> {
        self.ran.push(task);
        match self.fail_at {
            Some(t) if t == task => Err("disk on fire".into()),
            _ => Ok(()),
        }
    }
}

/// Every event as `kind:name:action`.
fn log(bus: &EventBus) -> Vec<String> {
    let (events, _) = bus.tail(&EventsRequest {
        tail_events: -1,
        ..Default::default()
    });
    events
        .iter()
        .map(|r| {
            let any = r.event.data.as_ref().unwrap();
            let v = any.value.as_slice();
            match any.type_url.as_str() {
                "talos/runtime/machine.SequenceEvent" => {
                    let e = pb::SequenceEvent::decode(v).unwrap();
                    let err = e
                        .error
                        .map(|e| format!(":{}", e.message))
                        .unwrap_or_default();
                    format!("seq:{}:{}{err}", e.sequence, e.action)
                }
                "talos/runtime/machine.PhaseEvent" => {
                    let e = pb::PhaseEvent::decode(v).unwrap();
                    format!("phase:{}:{}", e.phase, e.action)
                }
                "talos/runtime/machine.TaskEvent" => {
                    let e = pb::TaskEvent::decode(v).unwrap();
                    format!("task:{}:{}", e.task, e.action)
                }
                other => panic!("unexpected {other}"),
            }
        })
        .collect()
}

#[tokio::test]
async fn runs_the_phases_in_table_order_and_reports_each_step() {
    let bus = Arc::new(EventBus::default());
    let sequencer = Sequencer::new(bus.clone());
    let mut tasks = Recorder::default();
    sequencer
        .run(Sequence::Upgrade, "actor-1", &mut tasks)
        .await
        .unwrap();
    assert_eq!(
        tasks.ran,
        [Task::PullInstaller, Task::StopServices, Task::Reboot]
    );
    assert_eq!(
        log(&bus),
        [
            "seq:upgrade:1",
            "phase:upgrade:0",
            "task:PullInstaller:0",
            "task:PullInstaller:1",
            "phase:upgrade:1",
            "phase:stopEverything:0",
            "task:StopServices:0",
            "task:StopServices:1",
            "phase:stopEverything:1",
            "phase:reboot:0",
            "task:Reboot:0",
            "task:Reboot:1",
            "phase:reboot:1",
            "seq:upgrade:2",
        ]
    );
    let (events, _) = bus.tail(&EventsRequest {
        tail_events: -1,
        with_actor_id: "actor-1".into(),
        ..Default::default()
    });
    assert_eq!(events.len(), 14, "every event carries the actor ID");
}

#[tokio::test]
async fn a_failing_task_stops_the_sequence_and_frees_the_node() {
    let bus = Arc::new(EventBus::default());
    let sequencer = Sequencer::new(bus.clone());
    let mut tasks = Recorder {
        fail_at: Some(Task::PullInstaller),
        ..Default::default()
    };
    let err = sequencer
        .run(Sequence::Upgrade, "", &mut tasks)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "upgrade: task PullInstaller failed: disk on fire"
    );
    assert_eq!(tasks.ran, [Task::PullInstaller], "reboot never ran");
    assert_eq!(
        log(&bus).last().unwrap(),
        "seq:upgrade:2:upgrade: task PullInstaller failed: disk on fire"
    );
    // A failed upgrade does not take the node down: another sequence may run.
    sequencer
        .run(Sequence::Reboot, "", &mut Recorder::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_staged_upgrade_writes_the_slot_and_leaves_the_node_up() {
    let sequencer = Sequencer::new(Arc::new(EventBus::default()));
    let mut tasks = Recorder::default();
    sequencer
        .run(Sequence::StageUpgrade, "", &mut tasks)
        .await
        .unwrap();
    assert_eq!(tasks.ran, [Task::PullInstaller]);
    let mut tasks = Recorder::default();
    sequencer
        .run(Sequence::Reboot, "", &mut tasks)
        .await
        .unwrap();
    assert_eq!(tasks.ran, [Task::StopServices, Task::Reboot]);
}

#[tokio::test]
async fn after_a_reboot_only_a_shutdown_may_start() {
    let sequencer = Sequencer::new(Arc::new(EventBus::default()));
    sequencer
        .run(Sequence::Reboot, "", &mut Recorder::default())
        .await
        .unwrap();
    let busy = sequencer
        .run(Sequence::Upgrade, "", &mut Recorder::default())
        .await
        .unwrap_err();
    assert_eq!(
        busy,
        SequenceError::Busy {
            running: "reboot",
            incoming: "upgrade"
        }
    );
    sequencer
        .run(Sequence::Shutdown, "", &mut Recorder::default())
        .await
        .unwrap();
    let busy = sequencer
        .run(Sequence::Reboot, "", &mut Recorder::default())
        .await
        .unwrap_err();
    assert_eq!(
        busy.to_string(),
        "a shutdown sequence is in progress; reboot cannot start"
    );
}

#[test]
fn the_interruption_table() {
    use Sequence::*;
    let reset = Reset { leave_etcd: false };
    let all = [Boot, Reboot, Shutdown, reset, Upgrade, Rollback];
    let allowed: Vec<(Sequence, Sequence)> = all
        .iter()
        .flat_map(|r| all.iter().map(move |i| (*r, *i)))
        .filter(|(r, i)| may_interrupt(*r, *i))
        .collect();
    assert_eq!(allowed, [(Reboot, Shutdown)]);
    for s in all.into_iter().chain([Reset { leave_etcd: true }]) {
        assert!(!s.phases().is_empty() && s.phases().iter().all(|p| !p.tasks.is_empty()));
    }
}

#[test]
fn only_a_graceful_reset_of_a_control_plane_running_etcd_leaves_etcd() {
    let leaves = |graceful, control_plane, etcd_running| {
        Sequence::reset(graceful, control_plane, etcd_running)
            == Sequence::Reset { leave_etcd: true }
    };
    assert!(leaves(true, true, true));
    assert!(!leaves(false, true, true), "--graceful=false");
    assert!(!leaves(true, false, true), "a worker");
    assert!(!leaves(true, true, false), "etcd not running");
}

#[tokio::test]
async fn a_graceful_reset_leaves_etcd_before_services_stop() {
    let bus = Arc::new(EventBus::default());
    let sequencer = Sequencer::new(bus.clone());
    let mut tasks = Recorder::default();
    sequencer
        .run(Sequence::Reset { leave_etcd: true }, "", &mut tasks)
        .await
        .unwrap();
    assert_eq!(
        tasks.ran,
        [
            Task::LeaveEtcd,
            Task::StopServices,
            Task::WipeState,
            Task::ResetPower
        ]
    );
    let phases: Vec<String> = log(&bus)
        .into_iter()
        .filter(|e| e.starts_with("phase:") && e.ends_with(":0"))
        .collect();
    assert_eq!(
        phases,
        [
            "phase:leave:0",
            "phase:stopEverything:0",
            "phase:resetSystemDisk:0",
            "phase:power:0"
        ]
    );
    assert!(log(&bus).contains(&"task:LeaveEtcd:1".to_owned()));

    let sequencer = Sequencer::new(Arc::new(EventBus::default()));
    let mut tasks = Recorder::default();
    sequencer
        .run(Sequence::Reset { leave_etcd: false }, "", &mut tasks)
        .await
        .unwrap();
    assert_eq!(
        tasks.ran,
        [Task::StopServices, Task::WipeState, Task::ResetPower]
    );
}

#[tokio::test]
async fn a_refused_leave_stops_the_reset_before_anything_is_stopped_or_wiped() {
    let bus = Arc::new(EventBus::default());
    let sequencer = Sequencer::new(bus.clone());
    let mut tasks = Recorder {
        fail_at: Some(Task::LeaveEtcd),
        ..Default::default()
    };
    let err = sequencer
        .run(Sequence::Reset { leave_etcd: true }, "", &mut tasks)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "reset: task LeaveEtcd failed: disk on fire"
    );
    assert_eq!(tasks.ran, [Task::LeaveEtcd]);
    // The node stays up, so a reset with --graceful=false may follow.
    let mut tasks = Recorder::default();
    sequencer
        .run(Sequence::Reset { leave_etcd: false }, "", &mut tasks)
        .await
        .unwrap();
    assert_eq!(tasks.ran[0], Task::StopServices);
}
