//! Every service's state, health and recent history, for ServiceList and `ServiceStateEvent`s.
//! In-process services (network, timed, apid) and supervised processes report here alike.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use talos_proto::machine::{
    ServiceEvent, ServiceEvents, ServiceHealth, ServiceInfo, ServiceStateEvent,
    service_state_event::Action,
};
use tokio::sync::watch;

use crate::events::EventBus;

/// Service states, spelt as upstream reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Preparing,
    Waiting,
    Starting,
    Running,
    Stopping,
    Finished,
    Failed,
    Skipped,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Preparing => "Preparing",
            ServiceState::Waiting => "Waiting",
            ServiceState::Starting => "Starting",
            ServiceState::Running => "Running",
            ServiceState::Stopping => "Stopping",
            ServiceState::Finished => "Finished",
            ServiceState::Failed => "Failed",
            ServiceState::Skipped => "Skipped",
        }
    }

    fn action(self) -> Action {
        match self {
            ServiceState::Preparing => Action::Preparing,
            ServiceState::Waiting => Action::Waiting,
            ServiceState::Starting => Action::Starting,
            ServiceState::Running => Action::Running,
            ServiceState::Stopping => Action::Stopping,
            ServiceState::Finished => Action::Finished,
            ServiceState::Failed => Action::Failed,
            ServiceState::Skipped => Action::Skipped,
        }
    }
}

const EVENTS_KEPT: usize = 32;

/// A health check's latest verdict.
#[derive(Debug, Clone)]
struct Health {
    healthy: bool,
    message: String,
    since: SystemTime,
}

#[derive(Debug)]
struct Record {
    state: ServiceState,
    events: Vec<(ServiceState, String, SystemTime)>,
    /// For services without a health check: when they last became Running.
    running_since: Option<SystemTime>,
    /// For services with a health check; None until the first check after a start.
    checked: Option<Health>,
    has_health_check: bool,
}

#[derive(Debug, Clone)]
pub struct ServiceRegistry {
    inner: Arc<Mutex<BTreeMap<String, Record>>>,
    /// Bumped on every change, so dependants can wait for a service to come up.
    changed: Arc<watch::Sender<u64>>,
    bus: Option<Arc<EventBus>>,
}

impl Default for ServiceRegistry {
    fn default() -> Self {
        Self::new(None)
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

impl ServiceRegistry {
    /// A registry that also publishes each change as a `ServiceStateEvent` on `bus`.
    pub fn new(bus: Option<Arc<EventBus>>) -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            bus,
        }
    }

    pub fn set(&self, id: &str, state: ServiceState, message: &str) {
        let now = SystemTime::now();
        let health = {
            let mut services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let record = services.entry(id.to_owned()).or_insert_with(|| Record {
                state,
                events: Vec::new(),
                running_since: None,
                checked: None,
                has_health_check: false,
            });
            record.state = state;
            record.running_since = match state {
                ServiceState::Running => record.running_since.or(Some(now)),
                _ => None,
            };
            if state != ServiceState::Running {
                record.checked = None;
            }
            record.events.push((state, message.to_owned(), now));
            let excess = record.events.len().saturating_sub(EVENTS_KEPT);
            record.events.drain(..excess);
            health_of(record)
        };
        self.changed.send_modify(|v| *v += 1);
        if let Some(bus) = &self.bus {
            bus.publish(
                &ServiceStateEvent {
                    service: id.to_owned(),
                    action: state.action() as i32,
                    message: message.to_owned(),
                    health: Some(health),
                },
                "",
            );
        }
    }

    /// Declares that `id` has a health check, so it is not healthy merely by running.
    pub fn expect_health_checks(&self, id: &str) {
        let mut services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(record) = services.get_mut(id) {
            record.has_health_check = true;
        }
    }

    /// Records a health check's result; a change of verdict is logged as an event.
    pub fn set_health(&self, id: &str, healthy: bool, message: &str) {
        let changed = {
            let mut services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let Some(record) = services.get_mut(id) else {
                return;
            };
            if record.state != ServiceState::Running {
                return;
            }
            let changed = record.checked.as_ref().map(|h| h.healthy) != Some(healthy);
            if changed {
                record.checked = Some(Health {
                    healthy,
                    message: message.to_owned(),
                    since: SystemTime::now(),
                });
                let verdict = if healthy {
                    "Health check successful".to_owned()
                } else {
                    format!("Health check failed: {message}")
                };
                record
                    .events
                    .push((ServiceState::Running, verdict, SystemTime::now()));
                let excess = record.events.len().saturating_sub(EVENTS_KEPT);
                record.events.drain(..excess);
            }
            changed
        };
        if changed {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// True when `id` runs and, if it has a health check, passed its last one.
    pub fn is_up(&self, id: &str) -> bool {
        let services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        services.get(id).is_some_and(|r| {
            r.state == ServiceState::Running
                && (!r.has_health_check || r.checked.as_ref().is_some_and(|h| h.healthy))
        })
    }

    /// `id`'s state; None for a service never reported.
    pub fn state(&self, id: &str) -> Option<ServiceState> {
        let services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        services.get(id).map(|r| r.state)
    }

    /// The message of `id`'s latest event; None for a service never reported.
    pub fn last_message(&self, id: &str) -> Option<String> {
        let services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        services.get(id)?.events.last().map(|e| e.1.clone())
    }

    /// A receiver that changes whenever any service does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        let services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        services
            .iter()
            .map(|(id, r)| ServiceInfo {
                id: id.clone(),
                state: r.state.as_str().to_owned(),
                events: Some(ServiceEvents {
                    events: r
                        .events
                        .iter()
                        .map(|(state, msg, ts)| ServiceEvent {
                            msg: msg.clone(),
                            state: state.as_str().to_owned(),
                            ts: Some(timestamp(*ts)),
                        })
                        .collect(),
                }),
                health: Some(health_of(r)),
            })
            .collect()
    }
}

fn health_of(r: &Record) -> ServiceHealth {
    if r.has_health_check {
        return match &r.checked {
            Some(h) => ServiceHealth {
                unknown: false,
                healthy: h.healthy,
                last_message: h.message.clone(),
                last_change: Some(timestamp(h.since)),
            },
            None => ServiceHealth {
                unknown: true,
                ..Default::default()
            },
        };
    }
    ServiceHealth {
        unknown: false,
        healthy: r.running_since.is_some(),
        last_message: r.events.last().map(|e| e.1.clone()).unwrap_or_default(),
        last_change: r.events.last().map(|e| timestamp(e.2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_state_events_and_health() {
        let reg = ServiceRegistry::default();
        reg.set("network", ServiceState::Waiting, "DHCP on eth0");
        reg.set("network", ServiceState::Running, "eth0 10.0.2.15/24");
        reg.set("apid", ServiceState::Failed, "bind: address in use");
        let list = reg.list();
        assert_eq!(
            list.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["apid", "network"]
        );
        let net = &list[1];
        assert_eq!(net.state, "Running");
        assert_eq!(net.events.as_ref().unwrap().events.len(), 2);
        assert!(net.health.as_ref().unwrap().healthy);
        assert_eq!(
            net.health.as_ref().unwrap().last_message,
            "eth0 10.0.2.15/24"
        );
        assert!(!list[0].health.as_ref().unwrap().healthy);
        assert!(reg.is_up("network") && !reg.is_up("apid") && !reg.is_up("etcd"));
    }

    #[test]
    fn a_checked_service_is_up_only_once_healthy() {
        let reg = ServiceRegistry::default();
        reg.set("etcd", ServiceState::Starting, "starting");
        reg.expect_health_checks("etcd");
        reg.set("etcd", ServiceState::Running, "started with PID 7");
        let health = reg.list()[0].health.clone().unwrap();
        assert!(health.unknown && !reg.is_up("etcd"));
        reg.set_health("etcd", false, "connection refused");
        assert!(!reg.is_up("etcd"));
        reg.set_health("etcd", true, "");
        reg.set_health("etcd", true, "");
        assert!(reg.is_up("etcd"));
        let info = &reg.list()[0];
        let messages: Vec<_> = info
            .events
            .as_ref()
            .unwrap()
            .events
            .iter()
            .map(|e| e.msg.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "starting",
                "started with PID 7",
                "Health check failed: connection refused",
                "Health check successful"
            ]
        );
        reg.set("etcd", ServiceState::Stopping, "stopping");
        assert!(!reg.is_up("etcd"));
        assert!(reg.list()[0].health.as_ref().unwrap().unknown);
    }

    #[test]
    fn publishes_state_changes_as_events() {
        let bus = Arc::new(EventBus::default());
        let reg = ServiceRegistry::new(Some(bus.clone()));
        let mut changes = reg.subscribe();
        reg.set("containerd", ServiceState::Running, "started");
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let (events, _) = bus.tail(&talos_proto::machine::EventsRequest {
            tail_events: -1,
            ..Default::default()
        });
        let data = events[0].event.data.as_ref().unwrap();
        assert_eq!(data.type_url, "talos/runtime/machine.ServiceStateEvent");
        let event = <ServiceStateEvent as prost::Message>::decode(data.value.as_slice()).unwrap();
        assert_eq!(event.service, "containerd");
        assert_eq!(event.action, Action::Running as i32);
    }

    #[test]
    fn keeps_a_bounded_history() {
        let reg = ServiceRegistry::default();
        for i in 0..100 {
            reg.set("x", ServiceState::Waiting, &i.to_string());
        }
        let events = reg.list()[0].events.clone().unwrap().events;
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(events.last().unwrap().msg, "99");
    }
}
