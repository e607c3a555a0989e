//! The PUB side: every event of the internal stream goes out as two frames,
//! `[topic][json]`. Publishing never blocks: the zeromq crate drops messages
//! for a subscriber whose queue is full, and this task skips events it fell
//! behind on (counted in `agentvisor_events_dropped_total`); `seq` gaps show
//! both to subscribers.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use zeromq::{PubSocket, Socket, SocketEvent, SocketSend, ZmqMessage};

use crate::events::Published;
use crate::supervisor::AgentTable;

/// Encodes one event as its two frames.
pub fn frames(event: &Published) -> Option<ZmqMessage> {
    ZmqMessage::try_from(vec![Bytes::from_static(event.topic.as_bytes()), event.json().clone()]).ok()
}

/// Publishes events until the event bus closes. While no subscriber is
/// connected the events are skipped unserialised (PUB sends to no one; a
/// subscriber sees the events published after it joined either way).
pub async fn run(
    mut socket: PubSocket,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Published>>,
    ctx: Arc<AgentTable>,
) {
    use futures::StreamExt;
    let mut monitor = socket.monitor();
    let (mut peers, mut monitored) = (0usize, true);
    loop {
        let received = tokio::select! {
            biased;
            peer = monitor.next(), if monitored => {
                match peer {
                    Some(SocketEvent::Accepted(..) | SocketEvent::Connected(..)) => peers += 1,
                    Some(SocketEvent::Disconnected(_)) => peers = peers.saturating_sub(1),
                    Some(_) => {}
                    // The monitor ended: publish everything from now on.
                    None => (peers, monitored) = (usize::MAX, false),
                }
                continue;
            }
            received = rx.recv() => received,
        };
        match received {
            Ok(event) => {
                if peers == 0 {
                    continue;
                }
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
