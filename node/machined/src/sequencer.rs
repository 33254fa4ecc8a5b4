//! Sequences as data: each is a list of named phases of named tasks. A table says which
//! running sequence an incoming one may take over from; every sequence, phase and task start
//! and stop (and a sequence's error) is published as an event with the caller's actor ID.

use std::sync::{Arc, Mutex};

use talos_proto::common;
use talos_proto::machine::{
    PhaseEvent, SequenceEvent, TaskEvent, phase_event, sequence_event, task_event,
};

use crate::events::EventBus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    Boot,
    Reboot,
    Shutdown,
    /// `leave_etcd`: remove this node's etcd member first (graceful, on a control plane with
    /// etcd running).
    Reset {
        leave_etcd: bool,
    },
    Upgrade,
    /// An upgrade written to the other slot and armed, without a reboot: the new version boots
    /// at the next reboot, whatever causes it.
    StageUpgrade,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    LoadModules,
    /// Mounts the initramfs's squashfs at /usr (containerd, runc, etcd, mkfs.ext4).
    MountRootfs,
    /// Adds STATE and EPHEMERAL to the system disk and formats them, when missing.
    CreateSystemPartitions,
    MountState,
    MountEphemeral,
    OpenBootSlots,
    ApplyTimeFloor,
    LoadConfig,
    StartNetwork,
    WaitForAddress,
    StartTimeSync,
    FetchConfig,
    StartInstaller,
    StartApi,
    /// Runs the node's supervised services (containerd, etcd) once it is configured.
    StartServices,
    /// Stops them, dependants first, so etcd and containerd shut down cleanly.
    StopServices,
    /// Removes this node's member from the etcd cluster, stops etcd and empties its data.
    LeaveEtcd,
    WipeState,
    PullInstaller,
    SwitchSlot,
    Reboot,
    PowerOff,
    /// Reboot or power off, as the Reset request asked.
    ResetPower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub name: &'static str,
    pub tasks: &'static [Task],
}

const STOP_SERVICES: Phase = Phase {
    name: "stopEverything",
    tasks: &[Task::StopServices],
};

const RESET_SYSTEM_DISK: Phase = Phase {
    name: "resetSystemDisk",
    tasks: &[Task::WipeState],
};

const RESET_POWER: Phase = Phase {
    name: "power",
    tasks: &[Task::ResetPower],
};

impl Sequence {
    /// The reset a request asks for: a graceful one leaves etcd first when this node is a
    /// control plane whose etcd runs (upstream drains Kubernetes first too; no kubelet runs
    /// here, so there is nothing to drain).
    pub fn reset(graceful: bool, control_plane: bool, etcd_running: bool) -> Sequence {
        Sequence::Reset {
            leave_etcd: graceful && control_plane && etcd_running,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sequence::Boot => "boot",
            Sequence::Reboot => "reboot",
            Sequence::Shutdown => "shutdown",
            Sequence::Reset { .. } => "reset",
            Sequence::Upgrade => "upgrade",
            Sequence::StageUpgrade => "stageUpgrade",
            Sequence::Rollback => "rollback",
        }
    }

    pub fn phases(self) -> &'static [Phase] {
        use Task::*;
        match self {
            Sequence::Boot => &[
                Phase {
                    name: "modules",
                    tasks: &[LoadModules],
                },
                Phase {
                    name: "rootfs",
                    tasks: &[MountRootfs],
                },
                Phase {
                    name: "storage",
                    tasks: &[
                        CreateSystemPartitions,
                        MountState,
                        MountEphemeral,
                        OpenBootSlots,
                    ],
                },
                Phase {
                    name: "time",
                    tasks: &[ApplyTimeFloor],
                },
                Phase {
                    name: "config",
                    tasks: &[LoadConfig],
                },
                Phase {
                    name: "network",
                    tasks: &[StartNetwork, WaitForAddress],
                },
                Phase {
                    name: "services",
                    tasks: &[StartTimeSync, FetchConfig, StartInstaller],
                },
                Phase {
                    name: "api",
                    tasks: &[StartApi],
                },
                Phase {
                    name: "startEverything",
                    tasks: &[StartServices],
                },
            ],
            Sequence::Reboot => &[
                STOP_SERVICES,
                Phase {
                    name: "reboot",
                    tasks: &[Reboot],
                },
            ],
            Sequence::Shutdown => &[
                STOP_SERVICES,
                Phase {
                    name: "shutdown",
                    tasks: &[PowerOff],
                },
            ],
            Sequence::Reset { leave_etcd: true } => &[
                Phase {
                    name: "leave",
                    tasks: &[LeaveEtcd],
                },
                STOP_SERVICES,
                RESET_SYSTEM_DISK,
                RESET_POWER,
            ],
            Sequence::Reset { leave_etcd: false } => {
                &[STOP_SERVICES, RESET_SYSTEM_DISK, RESET_POWER]
            }
            Sequence::Upgrade => &[
                Phase {
                    name: "upgrade",
                    tasks: &[PullInstaller],
                },
                STOP_SERVICES,
                Phase {
                    name: "reboot",
                    tasks: &[Reboot],
                },
            ],
            Sequence::StageUpgrade => &[Phase {
                name: "upgrade",
                tasks: &[PullInstaller],
            }],
            Sequence::Rollback => &[
                Phase {
                    name: "rollback",
                    tasks: &[SwitchSlot],
                },
                STOP_SERVICES,
                Phase {
                    name: "reboot",
                    tasks: &[Reboot],
                },
            ],
        }
    }

    /// Sequences that end with the node going down: once one has run, nothing else starts.
    fn ends_the_boot(self) -> bool {
        !matches!(self, Sequence::Boot | Sequence::StageUpgrade)
    }
}

/// Whether `incoming` may start while `running` runs (or has taken the node down). Only a
/// shutdown may take over from a reboot; everything else waits for a fresh boot.
pub fn may_interrupt(running: Sequence, incoming: Sequence) -> bool {
    matches!((running, incoming), (Sequence::Reboot, Sequence::Shutdown))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SequenceError {
    #[error("a {running} sequence is in progress; {incoming} cannot start")]
    Busy {
        running: &'static str,
        incoming: &'static str,
    },
    #[error("{sequence}: task {task:?} failed: {reason}")]
    Task {
        sequence: &'static str,
        task: Task,
        reason: String,
    },
}

/// Runs one task of a sequence.
pub trait Tasks {
    fn run(&mut self, task: Task) -> impl Future<Output = Result<(), String>>;
}

/// The node is held for this sequence; only [`Sequencer::claim`] makes one.
#[derive(Debug)]
pub struct Claimed(Sequence);

#[derive(Debug)]
pub struct Sequencer {
    bus: Arc<EventBus>,
    running: Mutex<Option<Sequence>>,
}

impl Sequencer {
    pub fn new(bus: Arc<EventBus>) -> Sequencer {
        Sequencer {
            bus,
            running: Mutex::new(None),
        }
    }

    pub fn bus(&self) -> &Arc<EventBus> {
        &self.bus
    }

    /// Takes the node for `incoming`, unless a sequence it may not interrupt holds it; the
    /// claim is then run with [`Sequencer::run_claimed`].
    pub fn claim(&self, incoming: Sequence) -> Result<Claimed, SequenceError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match *running {
            Some(current) if !may_interrupt(current, incoming) => Err(SequenceError::Busy {
                running: current.name(),
                incoming: incoming.name(),
            }),
            _ => {
                *running = Some(incoming);
                Ok(Claimed(incoming))
            }
        }
    }

    fn release(&self, finished: Sequence, ok: bool) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if *running == Some(finished) && !(ok && finished.ends_the_boot()) {
            *running = None;
        }
    }

    /// Runs every task of every phase in order; the first failure stops the sequence.
    pub async fn run(
        &self,
        sequence: Sequence,
        actor_id: &str,
        tasks: &mut impl Tasks,
    ) -> Result<(), SequenceError> {
        let claimed = self.claim(sequence)?;
        self.run_claimed(claimed, actor_id, tasks).await
    }

    /// [`Sequencer::run`] for a sequence already claimed.
    pub async fn run_claimed(
        &self,
        Claimed(sequence): Claimed,
        actor_id: &str,
        tasks: &mut impl Tasks,
    ) -> Result<(), SequenceError> {
        let name = sequence.name();
        self.publish_sequence(name, sequence_event::Action::Start, None, actor_id);
        let result = self.run_phases(sequence, actor_id, tasks).await;
        let error = result.as_ref().err().map(|e| common::Error {
            code: common::Code::Fatal as i32,
            message: e.to_string(),
            ..Default::default()
        });
        self.publish_sequence(name, sequence_event::Action::Stop, error, actor_id);
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        self.release(sequence, result.is_ok());
        result
    }

    async fn run_phases(
        &self,
        sequence: Sequence,
        actor_id: &str,
        tasks: &mut impl Tasks,
    ) -> Result<(), SequenceError> {
        for phase in sequence.phases() {
            self.bus.publish(
                &PhaseEvent {
                    phase: phase.name.into(),
                    action: phase_event::Action::Start as i32,
                },
                actor_id,
            );
            for task in phase.tasks {
                let label = format!("{task:?}");
                let event = |action: task_event::Action| TaskEvent {
                    task: label.clone(),
                    action: action as i32,
                };
                self.bus
                    .publish(&event(task_event::Action::Start), actor_id);
                let outcome = tasks.run(*task).await;
                self.bus.publish(&event(task_event::Action::Stop), actor_id);
                outcome.map_err(|reason| SequenceError::Task {
                    sequence: sequence.name(),
                    task: *task,
                    reason,
                })?;
            }
            self.bus.publish(
                &PhaseEvent {
                    phase: phase.name.into(),
                    action: phase_event::Action::Stop as i32,
                },
                actor_id,
            );
        }
        Ok(())
    }

    fn publish_sequence(
        &self,
        name: &str,
        action: sequence_event::Action,
        error: Option<common::Error>,
        actor_id: &str,
    ) {
        self.bus.publish(
            &SequenceEvent {
                sequence: name.into(),
                action: action as i32,
                error,
            },
            actor_id,
        );
    }
}

#[cfg(test)]
mod tests;
