//! The services machined runs in-process, with their state history for ServiceList.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use talos_proto::machine::{ServiceEvent, ServiceEvents, ServiceHealth, ServiceInfo};

/// Service states, spelt as upstream reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    Preparing,
    Waiting,
    Running,
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Preparing => "Preparing",
            ServiceState::Waiting => "Waiting",
            ServiceState::Running => "Running",
            ServiceState::Failed => "Failed",
        }
    }
}

const EVENTS_KEPT: usize = 32;

#[derive(Debug)]
struct Record {
    state: ServiceState,
    events: Vec<(ServiceState, String, SystemTime)>,
    healthy_since: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
pub struct ServiceRegistry {
    inner: Arc<Mutex<BTreeMap<String, Record>>>,
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

impl ServiceRegistry {
    pub fn set(&self, id: &str, state: ServiceState, message: &str) {
        let now = SystemTime::now();
        let mut services = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let record = services.entry(id.to_owned()).or_insert_with(|| Record {
            state,
            events: Vec::new(),
            healthy_since: None,
        });
        record.state = state;
        record.healthy_since = match state {
            ServiceState::Running => record.healthy_since.or(Some(now)),
            _ => None,
        };
        record.events.push((state, message.to_owned(), now));
        let excess = record.events.len().saturating_sub(EVENTS_KEPT);
        record.events.drain(..excess);
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
                health: Some(ServiceHealth {
                    unknown: false,
                    healthy: r.healthy_since.is_some(),
                    last_message: r.events.last().map(|e| e.1.clone()).unwrap_or_default(),
                    last_change: r.events.last().map(|e| timestamp(e.2)),
                }),
            })
            .collect()
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
