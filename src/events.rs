//! The internal event stream: every lifecycle transition, task outcome,
//! routing receipt and model event, in order, each with `seq` and `ts`.
//!
//! Where it sits (DESIGN §15): above `telemetry` (it counts) and `core` (the
//! typed [`Event`]), below everything that emits. [`EventBus::emit`] is the
//! one place that logs, counts and publishes an event; the ZeroMQ PUB
//! socket, tests and the CLI subscribe. A tokio broadcast channel: a subscriber that
//! falls more than [`EVENT_BUFFER`] events behind loses the oldest ones,
//! which the `seq` gap reveals; publishing never blocks.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::IntCounterVec;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::core::Event;

/// Events a subscriber may lag behind before it loses the oldest.
pub(crate) const EVENT_BUFFER: usize = 65_536;

/// One published event, serialised as `{"seq", "ts", "topic", ...data}`.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// Monotonic per daemon run, from 1.
    pub seq: u64,
    /// Unix time, seconds.
    pub ts: f64,
    /// Topic, e.g. `agent.started` (the ZeroMQ topic frame).
    pub topic: &'static str,
    /// Topic-specific fields (`agent`, `group`, `reason`, ...).
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

impl Published {
    /// A field of `data` as a string, if present.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// Publisher side of the event stream; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Next seq; the lock also orders sends so that seq order is send order.
    seq: Mutex<u64>,
    tx: broadcast::Sender<Arc<Published>>,
    counter: IntCounterVec,
}

impl EventBus {
    /// A bus counting events by topic in `counter` (label `topic`).
    pub fn new(counter: IntCounterVec) -> EventBus {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        EventBus { inner: Arc::new(Inner { seq: Mutex::new(0), tx, counter }) }
    }

    /// Logs, counts and publishes `event`; returns its seq. Never blocks.
    pub(crate) fn emit(&self, event: Event) -> u64 {
        let topic = event.topic();
        let data = match serde_json::to_value(&event) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) | Err(_) => Map::new(),
            Ok(other) => Map::from_iter([("value".to_string(), other)]),
        };
        match &event {
            e if e.is_warning() => {
                let details = serde_json::Value::Object(data.clone());
                tracing::warn!(topic, %details, "event");
            }
            Event::Agent(t) => tracing::info!(agent = %t.agent, state = t.state, "agent state"),
            _ => tracing::debug!(topic, "event"),
        }
        let ts = crate::core::unix_time();
        self.inner.counter.with_label_values(&[topic]).inc();
        let mut seq = self.inner.seq.lock();
        *seq += 1;
        let published = Arc::new(Published { seq: *seq, ts, topic, data });
        // An error only means nobody subscribes right now.
        let _ = self.inner.tx.send(published);
        *seq
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.inner.tx.subscribe()
    }
}
