//! The tasks of the sequences the API starts (reboot, shutdown, reset, upgrade, rollback).

use std::path::Path;
use std::sync::Arc;

use talos_node_sys::power::RebootAction;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::etcd_member::{self, EtcdError};
use crate::node::Node;
use crate::sequencer::{Sequence, SequenceError, Task, Tasks};
use crate::supervisor::stack;
use crate::{system_disk, upgrade};

/// What one API request asked for.
#[derive(Debug, Default)]
pub struct Request {
    /// Reset: wipe STATE, EPHEMERAL and META; then reboot (`true`) or power off.
    pub wipe_state: bool,
    pub wipe_ephemeral: bool,
    pub wipe_meta: bool,
    pub reboot_after_reset: bool,
    /// Upgrade: the installer image reference.
    pub image: String,
    /// Reboot and shutdown with force: services are not stopped first.
    pub force: bool,
}

pub struct NodeTasks {
    node: Arc<Node>,
    request: Request,
    /// What an upgrade staged, for the response.
    pub staged_version: Option<String>,
}

impl NodeTasks {
    pub fn new(node: Arc<Node>, request: Request) -> NodeTasks {
        NodeTasks {
            node,
            request,
            staged_version: None,
        }
    }
}

impl Tasks for NodeTasks {
    async fn run(&mut self, task: Task) -> Result<(), String> {
        let slots = || {
            self.node.slots.clone().ok_or_else(|| {
                "this node did not boot from an A/B system disk (no talos.slot= on its kernel command line)".to_owned()
            })
        };
        match task {
            Task::StopServices if self.request.force => {
                tracing::warn!("forced: services are not stopped first");
            }
            Task::StopServices => self.node.supervisor.stop_all().await,
            Task::LeaveEtcd => self.leave_etcd().await?,
            Task::Reboot => self.node.schedule_power(RebootAction::Restart),
            Task::PowerOff => self.node.schedule_power(RebootAction::PowerOff),
            Task::ResetPower => self
                .node
                .schedule_power(if self.request.reboot_after_reset {
                    RebootAction::Restart
                } else {
                    RebootAction::PowerOff
                }),
            Task::WipeState => {
                if self.request.wipe_state {
                    self.node.wipe_state().map_err(|e| e.to_string())?;
                    tracing::info!("STATE wiped: the node comes back in maintenance mode");
                }
                if self.request.wipe_ephemeral {
                    let disk = self.node.slots.as_ref().map(|s| s.disk.disk.as_path());
                    system_disk::wipe_on_reset(disk).map_err(|e| e.to_string())?;
                }
                if let (true, Some(slots)) = (self.request.wipe_meta, &self.node.slots) {
                    slots.wipe_meta().map_err(|e| e.to_string())?;
                    tracing::info!("META wiped");
                }
            }
            Task::PullInstaller => {
                let config = self.node.config();
                let version = upgrade::stage(slots()?, &self.request.image, config.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                self.staged_version = Some(version);
            }
            Task::SwitchSlot => {
                let slots = slots()?;
                let slot = tokio::task::spawn_blocking(move || slots.switch_to_other())
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::info!("rollback to slot {slot}; rebooting");
            }
            other => return Err(format!("{other:?} is a boot task, not an API action")),
        }
        Ok(())
    }
}

impl NodeTasks {
    async fn leave_etcd(&self) -> Result<(), String> {
        leave_etcd(&self.node).await.map_err(|e| e.to_string())
    }
}

/// Removes this node's etcd member through the local etcd, then stops etcd and empties its
/// data directory, as upstream does: a removed member cannot start on that data again.
pub async fn leave_etcd(node: &Node) -> Result<(), EtcdError> {
    let config = node.config().ok_or_else(|| {
        EtcdError::Config("the node has no machine config, so no etcd CA".to_owned())
    })?;
    let mut client = etcd_member::connect_local(&config).await?;
    let peer_urls: Vec<String> = node
        .addresses()
        .into_iter()
        .map(|a| stack::etcd_url(a, stack::ETCD_PEER_PORT))
        .collect();
    let member = etcd_member::leave(&mut client, &node.hostname(), &peer_urls).await?;
    tracing::info!(
        "left etcd: member {:?} ({:016x}) removed",
        member.name,
        member.id
    );
    node.supervisor
        .stop("etcd")
        .await
        .map_err(|e| EtcdError::Stop(e.to_string()))?;
    etcd_member::clear_data(Path::new(stack::ETCD_DATA))
}

fn status(e: &SequenceError) -> Status {
    match e {
        SequenceError::Busy { .. } => Status::failed_precondition(e.to_string()),
        SequenceError::Task {
            task: Task::PullInstaller,
            ..
        } => Status::unavailable(e.to_string()),
        SequenceError::Task {
            task: Task::SwitchSlot | Task::LeaveEtcd,
            ..
        } => Status::failed_precondition(e.to_string()),
        SequenceError::Task { .. } => Status::internal(e.to_string()),
    }
}

type Running = JoinHandle<Result<NodeTasks, SequenceError>>;

/// Claims the node for `sequence` and runs it in a task of its own, so a caller that goes away
/// (a cancelled RPC) cannot stop it halfway.
fn spawn(
    node: &Arc<Node>,
    sequence: Sequence,
    actor_id: &str,
    request: Request,
) -> Result<Running, Status> {
    let claimed = node.sequencer.claim(sequence).map_err(|e| status(&e))?;
    let node = node.clone();
    let actor_id = actor_id.to_owned();
    Ok(tokio::spawn(async move {
        let mut tasks = NodeTasks::new(node.clone(), request);
        node.sequencer
            .run_claimed(claimed, &actor_id, &mut tasks)
            .await
            .map(|()| tasks)
    }))
}

/// Runs `sequence` for one request to its end; errors become API statuses.
pub async fn run(
    node: &Arc<Node>,
    sequence: Sequence,
    actor_id: &str,
    request: Request,
) -> Result<NodeTasks, Status> {
    spawn(node, sequence, actor_id, request)?
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", sequence.name())))?
        .map_err(|e| status(&e))
}

/// Starts `sequence` and returns once it holds the node, as upstream does for reboot, shutdown
/// and reset: how it goes is told by the events under `actor_id`, and by the log.
pub fn start(
    node: &Arc<Node>,
    sequence: Sequence,
    actor_id: &str,
    request: Request,
) -> Result<(), Status> {
    spawn(node, sequence, actor_id, request).map(drop)
}
