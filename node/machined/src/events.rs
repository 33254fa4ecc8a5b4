//! Runtime events: a ring of the last 1,000 (as upstream keeps) for `Events` with a tail, and
//! a broadcast for followers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use prost::Message;
use talos_proto::machine::{self as pb};
use tokio::sync::broadcast;

pub const CAPACITY: usize = 1000;
const TYPE_URL_PREFIX: &str = "talos/runtime/";

/// One event, already encoded as the API sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub at: SystemTime,
    pub event: pb::Event,
}

#[derive(Debug)]
pub struct EventBus {
    ring: Mutex<(u64, VecDeque<Recorded>)>,
    live: broadcast::Sender<Recorded>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            ring: Mutex::new((0, VecDeque::with_capacity(CAPACITY))),
            live: broadcast::channel(CAPACITY).0,
        }
    }
}

/// Payloads machined emits.
pub trait Payload: Message + Sized {
    const NAME: &'static str;
}

impl Payload for pb::SequenceEvent {
    const NAME: &'static str = "machine.SequenceEvent";
}
impl Payload for pb::PhaseEvent {
    const NAME: &'static str = "machine.PhaseEvent";
}
impl Payload for pb::TaskEvent {
    const NAME: &'static str = "machine.TaskEvent";
}
impl Payload for pb::ServiceStateEvent {
    const NAME: &'static str = "machine.ServiceStateEvent";
}
impl Payload for pb::MachineStatusEvent {
    const NAME: &'static str = "machine.MachineStatusEvent";
}

impl EventBus {
    pub fn publish<P: Payload>(&self, payload: &P, actor_id: &str) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.0 += 1;
        let at = SystemTime::now();
        let nanos = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let recorded = Recorded {
            at,
            event: pb::Event {
                metadata: None,
                data: Some(prost_types::Any {
                    type_url: format!("{TYPE_URL_PREFIX}{}", P::NAME),
                    value: payload.encode_to_vec(),
                }),
                // Sortable: time first, then a sequence number for events in one tick.
                id: format!("{nanos:020x}{:08x}", ring.0),
                actor_id: actor_id.to_owned(),
            },
        };
        if ring.1.len() == CAPACITY {
            ring.1.pop_front();
        }
        ring.1.push_back(recorded.clone());
        drop(ring);
        let _ = self.live.send(recorded);
    }

    /// The stored events a request's tail asks for, oldest first, and a receiver for the
    /// rest (subscribed under the same lock, so nothing falls between them).
    pub fn tail(
        &self,
        request: &pb::EventsRequest,
    ) -> (Vec<Recorded>, broadcast::Receiver<Recorded>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = self.live.subscribe();
        let matches = |r: &&Recorded| {
            request.with_actor_id.is_empty() || r.event.actor_id == request.with_actor_id
        };
        let stored: Vec<&Recorded> = ring.1.iter().filter(matches).collect();
        let from = if !request.tail_id.is_empty() {
            stored
                .iter()
                .position(|r| r.event.id == request.tail_id)
                .map_or(0, |i| i + 1)
        } else if request.tail_seconds > 0 {
            let since = SystemTime::now()
                - std::time::Duration::from_secs(request.tail_seconds.unsigned_abs().into());
            stored
                .iter()
                .position(|r| r.at >= since)
                .unwrap_or(stored.len())
        } else if request.tail_events < 0 {
            0
        } else {
            stored
                .len()
                .saturating_sub(request.tail_events.unsigned_abs() as usize)
        };
        let tail = stored[from..].iter().map(|r| (*r).clone()).collect();
        (tail, receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str) -> pb::TaskEvent {
        pb::TaskEvent {
            task: name.into(),
            action: 0,
        }
    }

    fn names(events: &[Recorded]) -> Vec<String> {
        events
            .iter()
            .map(|r| {
                let any = r.event.data.as_ref().unwrap();
                assert_eq!(any.type_url, "talos/runtime/machine.TaskEvent");
                pb::TaskEvent::decode(any.value.as_slice()).unwrap().task
            })
            .collect()
    }

    #[test]
    fn tails_by_count_id_and_actor_and_keeps_the_last_thousand() {
        let bus = EventBus::default();
        for i in 0..1005 {
            bus.publish(
                &task(&format!("t{i}")),
                if i % 2 == 0 { "even" } else { "odd" },
            );
        }
        let request = |f: fn(&mut pb::EventsRequest)| {
            let mut r = pb::EventsRequest::default();
            f(&mut r);
            r
        };
        let (all, _) = bus.tail(&request(|r| r.tail_events = -1));
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(names(&all[..1]), ["t5"]);
        let (last, _) = bus.tail(&request(|r| r.tail_events = 2));
        assert_eq!(names(&last), ["t1003", "t1004"]);
        let (none, _) = bus.tail(&pb::EventsRequest::default());
        assert!(none.is_empty(), "no tail by default: only new events");
        let after = pb::EventsRequest {
            tail_id: last[0].event.id.clone(),
            ..Default::default()
        };
        assert_eq!(names(&bus.tail(&after).0), ["t1004"]);
        let (odd, _) = bus.tail(&request(|r| {
            r.tail_events = 2;
            r.with_actor_id = "odd".into();
        }));
        assert_eq!(names(&odd), ["t1001", "t1003"]);
        assert!(
            all.windows(2).all(|w| w[0].event.id < w[1].event.id),
            "ids sort"
        );
    }

    #[tokio::test]
    async fn followers_get_what_comes_after_the_tail() {
        let bus = EventBus::default();
        bus.publish(&task("before"), "");
        let (_, mut live) = bus.tail(&pb::EventsRequest::default());
        bus.publish(&task("after"), "");
        assert_eq!(names(&[live.recv().await.unwrap()]), ["after"]);
    }
}
