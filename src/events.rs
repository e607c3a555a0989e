//! The internal event stream: every lifecycle transition, task outcome and
//! (later) routing and model event, in order, each with `seq` and `ts`.
//!
//! Where it sits: the supervisor and agents publish; the ZeroMQ PUB socket,
//! tests and the CLI subscribe. A tokio broadcast channel: a subscriber that
//! falls more than [`EVENT_BUFFER`] events behind loses the oldest ones,
//! which the `seq` gap reveals; publishing never blocks.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::IntCounterVec;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

/// Events a subscriber may lag behind before it loses the oldest.
pub const EVENT_BUFFER: usize = 65_536;

/// One event, serialised as `{"seq", "ts", "topic", ...data}`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
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

impl Event {
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
    tx: broadcast::Sender<Arc<Event>>,
    counter: IntCounterVec,
}

impl EventBus {
    /// A bus counting events by topic in `counter` (label `topic`).
    pub fn new(counter: IntCounterVec) -> EventBus {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        EventBus { inner: Arc::new(Inner { seq: Mutex::new(0), tx, counter }) }
    }

    /// Publishes `data` (a JSON object; other values land under `value`)
    /// under `topic`; returns the event's seq.
    pub fn publish(&self, topic: &'static str, data: Value) -> u64 {
        let data = match data {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => Map::from_iter([("value".to_string(), other)]),
        };
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.inner.counter.with_label_values(&[topic]).inc();
        let mut seq = self.inner.seq.lock();
        *seq += 1;
        let event = Arc::new(Event { seq: *seq, ts, topic, data });
        // An error only means nobody subscribes right now.
        let _ = self.inner.tx.send(event);
        *seq
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.tx.subscribe()
    }
}
