//! The internal event stream: every lifecycle transition, task outcome,
//! routing receipt and model event, in order, each with `seq` and `ts`.
//!
//! Where it sits (DESIGN §15): above `telemetry` (it counts) and `core` (the
//! typed [`Event`]), below everything that emits. [`EventBus::emit`] is the
//! one place that logs, counts and publishes an event; the ZeroMQ PUB
//! socket, tests and the CLI subscribe. A tokio broadcast channel: a subscriber that
//! falls more than [`EVENT_BUFFER`] events behind loses the oldest ones,
//! which the `seq` gap reveals; publishing never blocks.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use parking_lot::Mutex;
use prometheus::IntCounterVec;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::core::Event;

/// Events a subscriber may lag behind before it loses the oldest.
pub(crate) const EVENT_BUFFER: usize = 65_536;

/// One published event. Its JSON `{"seq", "ts", "topic", ...fields}` is
/// written on first use ([`Published::json`]: the PUB socket, when it has
/// peers) and once at most; in-process subscribers (tests, the CLI) read
/// the fields with [`Published::data`].
#[derive(Debug)]
pub struct Published {
    /// Monotonic per daemon run, from 1.
    pub seq: u64,
    /// Unix time, seconds.
    pub ts: f64,
    /// Topic, e.g. `agent.started` (the ZeroMQ topic frame).
    pub topic: &'static str,
    /// The event.
    pub event: Event,
    /// Its JSON, written on first use.
    json: OnceLock<Bytes>,
    /// Its fields, parsed from `json` on first use.
    data: OnceLock<Map<String, Value>>,
}

impl Published {
    /// The whole event as JSON (the ZeroMQ data frame).
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            let fields = serde_json::to_vec(&self.event).unwrap_or_else(|_| b"{}".to_vec());
            envelope(self.seq, self.ts, self.topic, &fields)
        })
    }

    /// Topic-specific fields (`agent`, `group`, `reason`, ...; also `seq`,
    /// `ts` and `topic`).
    pub fn data(&self) -> &Map<String, Value> {
        // `json()` is a JSON object: it always parses.
        self.data.get_or_init(|| serde_json::from_slice(self.json()).unwrap_or_default())
    }

    /// A field of [`Published::data`] as a string, if present.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.data().get(key).and_then(Value::as_str)
    }
}

/// `{"seq":N,"ts":T,"topic":"X", ...fields}` from the event's own JSON
/// `fields` (an object; `null` adds nothing, any other value goes in
/// `value`).
fn envelope(seq: u64, ts: f64, topic: &str, fields: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(fields.len() + 64);
    // Writing numbers and a string to a Vec cannot fail.
    out.extend_from_slice(b"{\"seq\":");
    let _ = serde_json::to_writer(&mut out, &seq);
    out.extend_from_slice(b",\"ts\":");
    let _ = serde_json::to_writer(&mut out, &ts);
    out.extend_from_slice(b",\"topic\":");
    let _ = serde_json::to_writer(&mut out, topic);
    match fields {
        [b'{', b'}'] | b"null" | [] => {}
        [b'{', rest @ ..] => {
            out.push(b',');
            out.extend_from_slice(rest);
            return out.into();
        }
        other => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(other);
        }
    }
    out.push(b'}');
    out.into()
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
        match &event {
            e if e.is_warning() => {
                let details = serde_json::to_string(e).unwrap_or_default();
                tracing::warn!(topic, %details, "event");
            }
            Event::Agent(t) => tracing::info!(agent = %t.agent, state = t.state, "agent state"),
            _ => tracing::debug!(topic, "event"),
        }
        let ts = crate::core::unix_time();
        self.inner.counter.with_label_values(&[topic]).inc();
        let mut seq = self.inner.seq.lock();
        *seq += 1;
        let published =
            Arc::new(Published { seq: *seq, ts, topic, event, json: OnceLock::new(), data: OnceLock::new() });
        let _ = self.inner.tx.send(published);
        *seq
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.inner.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(fields: &[u8]) -> Value {
        serde_json::from_slice(&envelope(7, 1.5, "a.b", fields)).unwrap()
    }

    #[test]
    fn the_envelope_puts_seq_ts_topic_before_the_fields() {
        assert_eq!(
            parsed(br#"{"agent":"x","n":1}"#),
            json!({"seq": 7, "ts": 1.5, "topic": "a.b", "agent": "x", "n": 1})
        );
        assert_eq!(parsed(b"{}"), json!({"seq": 7, "ts": 1.5, "topic": "a.b"}));
        assert_eq!(parsed(b"null"), json!({"seq": 7, "ts": 1.5, "topic": "a.b"}));
        assert_eq!(parsed(b"[1]"), json!({"seq": 7, "ts": 1.5, "topic": "a.b", "value": [1]}));
    }

    #[test]
    fn emit_publishes_one_json_and_its_fields() {
        let bus = EventBus::new(prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["topic"]).unwrap());
        let mut rx = bus.subscribe();
        let seq = bus.emit(Event::InfraRestarted { component: "HybridRouter".into(), restarts: 2 });
        let e = rx.try_recv().unwrap();
        assert_eq!((e.seq, e.topic, e.str("component")), (seq, "infra.restarted", Some("HybridRouter")));
        assert_eq!(e.data()["restarts"], 2);
        let wire: Value = serde_json::from_slice(e.json()).unwrap();
        assert_eq!(wire["seq"], seq);
        assert_eq!(&wire, &Value::Object(e.data().clone()));
    }
}
