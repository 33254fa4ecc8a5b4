//! The service supervisor: runs the node's programs (containerd, etcd, ...) as child processes,
//! each in its own cgroup with memory limits and an OOM score, after its dependencies are up;
//! restarts them with backoff, checks their health, keeps ~1 MiB of output per service, and
//! starts, stops and restarts them on request. Each config's plan is reconciled with what runs:
//! new services start, changed ones restart with their new settings, dropped ones stop.

pub mod cgroups;
pub mod health;
pub mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use talos_node_sys::process::{self as sys, Signal};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::logging::{LogRing, RING_CAPACITY};
use crate::reaper::Reaper;
use crate::services::{ServiceRegistry, ServiceState};
use cgroups::{Cgroups, MemoryLimits};
use health::HealthCheck;

/// A condition beyond dependencies, such as etcd waiting for `talosctl bootstrap`.
#[derive(Debug, Clone)]
pub struct Gate {
    /// What the service waits for, as shown while it waits.
    pub waiting_for: String,
    pub open: watch::Receiver<bool>,
}

/// Gates are the same when they wait for the same thing on the same channel.
impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        self.waiting_for == other.waiting_for && self.open.same_channel(&other.open)
    }
}

/// Restart delays: doubled after each failure up to `max`, back to `first` once a run lasted
/// `stable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            stable: Duration::from_secs(60),
        }
    }
}

/// A file written before each start (configs, certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Everything the supervisor needs to run one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub id: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Services that must be up (running, and healthy if checked) first.
    pub depends_on: Vec<String>,
    pub gate: Option<Gate>,
    pub health: Option<HealthCheck>,
    pub health_interval: Duration,
    /// Relative to the cgroup root, e.g. `podruntime/etcd`.
    pub cgroup: String,
    pub memory: MemoryLimits,
    pub oom_score_adj: i32,
    pub directories: Vec<PathBuf>,
    pub files: Vec<GeneratedFile>,
    /// How long SIGTERM may take before the whole cgroup is killed.
    pub stop_timeout: Duration,
    pub backoff: Backoff,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("service {0:?} not found")]
    NotFound(String),
    #[error("service {0:?} runs inside machined and cannot be started, stopped or restarted")]
    NotSupervised(String),
}

#[derive(Debug)]
enum Control {
    Start(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
    /// New settings: a running service restarts with them, a waiting one waits anew with them,
    /// a stopped one keeps them for its next start.
    Update(Box<ServiceSpec>, oneshot::Sender<()>),
}

#[derive(Debug)]
struct Supervised {
    control: mpsc::UnboundedSender<Control>,
    logs: LogRing,
    /// The settings last given.
    spec: ServiceSpec,
}

/// What every service task shares.
#[derive(Debug, Clone)]
struct Context {
    registry: ServiceRegistry,
    reaper: Arc<Reaper>,
    cgroups: Cgroups,
}

#[derive(Debug)]
pub struct Supervisor {
    context: Context,
    services: Mutex<BTreeMap<String, Supervised>>,
}

impl Supervisor {
    pub fn new(registry: ServiceRegistry, reaper: Arc<Reaper>, cgroups: Cgroups) -> Supervisor {
        Supervisor {
            context: Context {
                registry,
                reaper,
                cgroups,
            },
            services: Mutex::default(),
        }
    }

    /// Starts supervising `spec` (once per id; later calls for the same id are ignored).
    pub fn add(&self, spec: ServiceSpec) {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if services.contains_key(&spec.id) {
            return;
        }
        let (control, rx) = mpsc::unbounded_channel();
        let logs = LogRing::new(RING_CAPACITY);
        self.context
            .registry
            .set(&spec.id, ServiceState::Preparing, "Service registered");
        if spec.health.is_some() {
            self.context.registry.expect_health_checks(&spec.id);
        }
        services.insert(
            spec.id.clone(),
            Supervised {
                control,
                logs: logs.clone(),
                spec: spec.clone(),
            },
        );
        tokio::spawn(supervise(spec, self.context.clone(), logs, rx));
    }

    /// Makes the supervised services those of `planned`: starts the new ones, restarts each one
    /// whose settings changed, and stops and forgets those no longer planned. Returns once the
    /// restarted and dropped services have stopped.
    pub async fn reconcile(&self, planned: Vec<ServiceSpec>) {
        let mut stopped = Vec::new();
        let mut new = Vec::new();
        {
            let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
            let planned_ids: BTreeSet<&str> = planned.iter().map(|s| s.id.as_str()).collect();
            let dropped: Vec<String> = services
                .keys()
                .filter(|id| !planned_ids.contains(id.as_str()))
                .cloned()
                .collect();
            for id in dropped {
                if let Some(service) = services.remove(&id) {
                    tracing::info!(service = id, "no longer in the plan: stopping it");
                    let (done, finished) = oneshot::channel();
                    let _ = service.control.send(Control::Stop(done));
                    stopped.push(finished);
                }
            }
            for spec in planned {
                match services.get_mut(&spec.id) {
                    None => new.push(spec),
                    Some(service) if service.spec != spec => {
                        tracing::info!(service = spec.id, "settings changed: applying them");
                        service.spec = spec.clone();
                        let (done, finished) = oneshot::channel();
                        let _ = service.control.send(Control::Update(Box::new(spec), done));
                        stopped.push(finished);
                    }
                    Some(_) => {}
                }
            }
        }
        for spec in new {
            self.add(spec);
        }
        futures_util::future::join_all(stopped).await;
    }

    /// Reports a service this node does not run, and why (once per reason).
    pub fn skip(&self, id: &str, reason: &str) {
        if self.context.registry.last_message(id).as_deref() != Some(reason) {
            self.context.registry.set(id, ServiceState::Skipped, reason);
        }
    }

    pub fn logs(&self, id: &str) -> Option<LogRing> {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services.get(id).map(|s| s.logs.clone())
    }

    pub async fn start(&self, id: &str) -> Result<(), ControlError> {
        self.send(id, Control::Start).await
    }

    /// Returns once the service has stopped.
    pub async fn stop(&self, id: &str) -> Result<(), ControlError> {
        self.send(id, Control::Stop).await
    }

    /// Returns once the old process has stopped; the new one starts right after.
    pub async fn restart(&self, id: &str) -> Result<(), ControlError> {
        self.send(id, Control::Restart).await
    }

    /// Stops every service, dependants first, e.g. before a reboot.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = {
            let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
            services.keys().cloned().collect()
        };
        let stops = ids.iter().map(|id| self.stop(id));
        futures_util::future::join_all(stops).await;
    }

    async fn send(
        &self,
        id: &str,
        message: impl FnOnce(oneshot::Sender<()>) -> Control,
    ) -> Result<(), ControlError> {
        let (done, finished) = oneshot::channel();
        {
            let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
            let Some(service) = services.get(id) else {
                let known = self.context.registry.last_message(id).is_some();
                return Err(if known {
                    ControlError::NotSupervised(id.to_owned())
                } else {
                    ControlError::NotFound(id.to_owned())
                });
            };
            let _ = service.control.send(message(done));
        }
        let _ = finished.await;
        Ok(())
    }
}

/// Puts machined in its own cgroup, then runs the services each config asks for, applying each
/// new config's plan to them.
pub async fn run(node: Arc<crate::node::Node>) {
    let memory = match std::fs::read_to_string(stack::MEMORY_FILE) {
        Ok(text) => stack::MemoryTable::parse(&text).unwrap_or_else(|e| {
            tracing::error!("{e}: services get no memory reservations");
            Default::default()
        }),
        Err(e) => {
            tracing::warn!(
                "{}: {e}: services get no memory reservations",
                stack::MEMORY_FILE
            );
            Default::default()
        }
    };
    if let Err(e) = node
        .supervisor
        .context
        .cgroups
        .join("init", memory.limits("machined"))
    {
        tracing::warn!("machined stays in the root cgroup: {e}");
    }
    let mut changes = node.config_changes();
    let mut etcd_certs = stack::EtcdCerts::default();
    loop {
        if let Some(config) = node.config() {
            let facts = stack::NodeFacts {
                hostname: node.hostname(),
                addresses: node.addresses(),
                arch: std::env::consts::ARCH,
            };
            let (run, skipped) = stack::plan(
                &config,
                &facts,
                &memory,
                node.etcd_bootstrap.subscribe(),
                &mut etcd_certs,
                std::time::SystemTime::now(),
            );
            node.supervisor.reconcile(run).await;
            for (id, reason) in skipped {
                node.supervisor.skip(id, &reason);
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// What interrupted a wait.
enum Woken {
    Ready,
    Control(Control),
    Closed,
}

/// What the supervise loop does after a wait.
enum Next {
    /// The wait ran out: go on.
    Proceed,
    /// Start or restart was asked for: start now, with the backoff reset.
    StartNow,
    /// Stop was asked for: the service is stopped.
    Stopped,
    /// The supervisor is gone.
    Quit,
}

/// Answers the control message that ended a wait, if any; new settings replace `spec`.
fn settle(woken: Woken, spec: &mut ServiceSpec, registry: &ServiceRegistry) -> Next {
    match woken {
        Woken::Ready => Next::Proceed,
        Woken::Closed => Next::Quit,
        Woken::Control(Control::Stop(done)) => {
            registry.set(&spec.id, ServiceState::Finished, "Service stopped");
            let _ = done.send(());
            Next::Stopped
        }
        Woken::Control(Control::Start(done) | Control::Restart(done)) => {
            let _ = done.send(());
            Next::StartNow
        }
        Woken::Control(Control::Update(new, done)) => {
            *spec = *new;
            let _ = done.send(());
            Next::StartNow
        }
    }
}

async fn supervise(
    mut spec: ServiceSpec,
    context: Context,
    logs: LogRing,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let registry = &context.registry;
    let id = spec.id.clone();
    let id = id.as_str();
    let mut wanted = true;
    let mut backoff = spec.backoff.first;
    loop {
        if !wanted {
            match control.recv().await {
                None => return,
                Some(Control::Stop(done)) => {
                    let _ = done.send(());
                    continue;
                }
                Some(Control::Update(new, done)) => {
                    spec = *new;
                    let _ = done.send(());
                    continue;
                }
                Some(Control::Start(done) | Control::Restart(done)) => {
                    wanted = true;
                    backoff = spec.backoff.first;
                    let _ = done.send(());
                }
            }
        }
        match settle(
            wait_until_ready(&spec, registry, &mut control).await,
            &mut spec,
            registry,
        ) {
            Next::Proceed => {}
            Next::Quit => return,
            Next::Stopped => {
                wanted = false;
                continue;
            }
            Next::StartNow => continue,
        }
        registry.set(id, ServiceState::Preparing, "Running pre stage");
        let launched = prepare(&spec).and_then(|()| {
            registry.set(id, ServiceState::Starting, "Starting service");
            launch(&spec, &context, &logs)
        });
        let (pid, mut exited) = match launched {
            Ok(running) => running,
            Err(e) => {
                registry.set(id, ServiceState::Failed, &e);
                let Some(next) = retry(&mut spec, backoff, registry, &mut control).await else {
                    return;
                };
                (wanted, backoff) = next;
                continue;
            }
        };
        let started = Instant::now();
        registry.set(
            id,
            ServiceState::Running,
            &format!("Started with PID {pid}: {}", spec.program.display()),
        );
        let health = spec.health.clone().map(|check| {
            tokio::spawn(watch_health(
                id.to_owned(),
                check,
                spec.health_interval,
                registry.clone(),
            ))
        });
        let outcome = loop {
            tokio::select! {
                status = &mut exited => break Exit::Exited(status.ok()),
                message = control.recv() => match message {
                    None => break Exit::Exited(None),
                    Some(Control::Start(done)) => { let _ = done.send(()); }
                    Some(Control::Stop(done)) => break Exit::Stop(done),
                    Some(Control::Restart(done)) => break Exit::Restart(done),
                    Some(Control::Update(new, done)) => break Exit::Update(new, done),
                },
            }
        };
        if let Some(health) = health {
            health.abort();
        }
        match outcome {
            Exit::Exited(status) => {
                if let Err(e) = context.cgroups.kill(&spec.cgroup) {
                    tracing::warn!(service = id, "{e}");
                }
                let (state, message) = describe_exit(status);
                registry.set(id, state, &message);
                if started.elapsed() >= spec.backoff.stable {
                    backoff = spec.backoff.first;
                }
                tracing::warn!(service = id, "{message}; restarting in {backoff:?}");
                let Some(next) = retry(&mut spec, backoff, registry, &mut control).await else {
                    return;
                };
                (wanted, backoff) = next;
            }
            Exit::Stop(done) => {
                registry.set(id, ServiceState::Stopping, "Stopping service");
                terminate(&spec, &context, pid, exited).await;
                registry.set(id, ServiceState::Finished, "Service stopped");
                wanted = false;
                let _ = done.send(());
            }
            Exit::Restart(done) => {
                registry.set(id, ServiceState::Stopping, "Restarting service");
                terminate(&spec, &context, pid, exited).await;
                backoff = spec.backoff.first;
                let _ = done.send(());
            }
            Exit::Update(new, done) => {
                registry.set(
                    id,
                    ServiceState::Stopping,
                    "Restarting service with changed settings",
                );
                terminate(&spec, &context, pid, exited).await;
                spec = *new;
                backoff = spec.backoff.first;
                let _ = done.send(());
            }
        }
    }
}

/// Waits `backoff` after a failure; whether the service is still wanted and the next backoff,
/// or None when the supervisor is gone.
async fn retry(
    spec: &mut ServiceSpec,
    backoff: Duration,
    registry: &ServiceRegistry,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Option<(bool, Duration)> {
    match settle(
        pause(backoff, &spec.id, registry, control).await,
        spec,
        registry,
    ) {
        Next::Proceed => Some((true, (backoff * 2).min(spec.backoff.max))),
        Next::StartNow => Some((true, spec.backoff.first)),
        Next::Stopped => Some((false, spec.backoff.first)),
        Next::Quit => None,
    }
}

enum Exit {
    Exited(Option<ExitStatus>),
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
    Update(Box<ServiceSpec>, oneshot::Sender<()>),
}

fn describe_exit(status: Option<ExitStatus>) -> (ServiceState, String) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) if s.success() => (ServiceState::Finished, "Service exited with code 0".into()),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (
                ServiceState::Failed,
                format!("Service exited with code {code}"),
            ),
            (None, Some(signal)) => (
                ServiceState::Failed,
                format!("Service killed by signal {signal}"),
            ),
            _ => (ServiceState::Failed, format!("Service ended: {s}")),
        },
        None => (
            ServiceState::Failed,
            "Service ended without an exit status".into(),
        ),
    }
}

/// Waits for dependencies and the gate, answering control messages meanwhile.
async fn wait_until_ready(
    spec: &ServiceSpec,
    registry: &ServiceRegistry,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Woken {
    let mut changes = registry.subscribe();
    let mut gate = spec.gate.clone();
    loop {
        let missing: Vec<&str> = spec
            .depends_on
            .iter()
            .filter(|d| !registry.is_up(d))
            .map(String::as_str)
            .collect();
        let closed_gate = gate.as_ref().filter(|g| !*g.open.borrow());
        let waiting = match (missing.as_slice(), closed_gate) {
            ([], None) => return Woken::Ready,
            ([], Some(g)) => format!("Waiting for {}", g.waiting_for),
            (missing, _) => format!("Waiting for service {} to be up", missing.join(", ")),
        };
        if registry.last_message(&spec.id).as_deref() != Some(waiting.as_str()) {
            registry.set(&spec.id, ServiceState::Waiting, &waiting);
        }
        changes.mark_unchanged();
        tokio::select! {
            _ = changes.changed() => {}
            opened = async {
                match gate.as_mut() {
                    Some(g) => g.open.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => if !opened { gate = None; },
            message = control.recv() => return message.map_or(Woken::Closed, Woken::Control),
        }
    }
}

/// Sleeps `delay` unless a control message arrives first.
async fn pause(
    delay: Duration,
    id: &str,
    registry: &ServiceRegistry,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Woken {
    registry.set(
        id,
        ServiceState::Waiting,
        &format!("Restarting in {delay:?}"),
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => Woken::Ready,
        message = control.recv() => message.map_or(Woken::Closed, Woken::Control),
    }
}

fn prepare(spec: &ServiceSpec) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for dir in &spec.directories {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    for file in &spec.files {
        if let Some(parent) = file.path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&file.path, &file.contents)
            .and_then(|()| {
                std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(file.mode))
            })
            .map_err(|e| format!("writing {}: {e}", file.path.display()))?;
    }
    if !spec.program.is_file() {
        return Err(format!("{} is not in this image", spec.program.display()));
    }
    Ok(())
}

fn launch(
    spec: &ServiceSpec,
    context: &Context,
    logs: &LogRing,
) -> Result<(i32, oneshot::Receiver<ExitStatus>), String> {
    let procs = context
        .cgroups
        .prepare(&spec.cgroup, spec.memory)
        .map_err(|e| e.to_string())?;
    let (reader, writer) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let stderr = writer
        .try_clone()
        .map_err(|e| format!("duplicating a pipe: {e}"))?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr);
    sys::confine(&mut command, procs, spec.oom_score_adj).map_err(|e| e.to_string())?;
    let running = context
        .reaper
        .spawn(&mut command)
        .map_err(|e| format!("starting {}: {e}", spec.program.display()))?;
    drop(command);
    let output = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
        .map_err(|e| format!("reading the output of {}: {e}", spec.id))?;
    tokio::spawn(collect_output(output, logs.clone()));
    Ok(running)
}

async fn collect_output(mut output: tokio::net::unix::pipe::Receiver, logs: LogRing) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = output.read(&mut buf).await {
        if n == 0 {
            return;
        }
        logs.append(&buf[..n]);
    }
}

/// SIGTERM, then after the stop timeout everything left in the cgroup gets SIGKILL.
async fn terminate(
    spec: &ServiceSpec,
    context: &Context,
    pid: i32,
    mut exited: oneshot::Receiver<ExitStatus>,
) {
    if let Err(e) = sys::send_signal(pid, Signal::Terminate) {
        tracing::warn!(service = spec.id, "{e}");
    }
    if tokio::time::timeout(spec.stop_timeout, &mut exited)
        .await
        .is_err()
    {
        tracing::warn!(
            service = spec.id,
            "did not stop within {:?}: killing its cgroup",
            spec.stop_timeout
        );
        if let Err(e) = context.cgroups.kill(&spec.cgroup) {
            tracing::warn!(service = spec.id, "{e}");
        }
        let _ = sys::send_signal(pid, Signal::Kill);
        let _ = exited.await;
    }
    if let Err(e) = context.cgroups.kill(&spec.cgroup) {
        tracing::warn!(service = spec.id, "{e}");
    }
}

async fn watch_health(
    id: String,
    check: HealthCheck,
    interval: Duration,
    registry: ServiceRegistry,
) {
    loop {
        match check.check().await {
            Ok(()) => registry.set_health(&id, true, ""),
            Err(e) => registry.set_health(&id, false, &e),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests;
