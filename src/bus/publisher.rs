//! The PUB side: every event of the internal stream goes out as two frames,
//! `[topic][json]`. Publishing never blocks: the zeromq crate drops messages
//! for a subscriber whose queue is full, and this task skips events it fell
//! behind on (counted in `agentvisor_events_dropped_total`); `seq` gaps show
//! both to subscribers.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use zeromq::{PubSocket, SocketSend, ZmqMessage};

use crate::events::Published;
use crate::supervisor::AgentTable;

/// Encodes one event as its two frames.
pub fn frames(event: &Published) -> Option<ZmqMessage> {
    ZmqMessage::try_from(vec![Bytes::from_static(event.topic.as_bytes()), event.json.clone()]).ok()
}

/// Publishes events until the event bus closes.
pub async fn run(
    mut socket: PubSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Published>>,
    ctx: Arc<AgentTable>,
) {
    loop {
        match rx.recv().await {
            Ok(event) => {
                if let Some(msg) = frames(&event)
                    && let Err(e) = socket.send(msg).await
                {
                    tracing::debug!(error = %e, "PUB send failed");
                }
            }
            Err(RecvError::Lagged(n)) => {
                ctx.metrics.events_dropped.inc_by(n);
                tracing::warn!(missed = n, "event publisher fell behind; subscribers will see a seq gap");
            }
            Err(RecvError::Closed) => return,
        }
    }
}
