//! The send side of the ROUTER socket: where a reply goes and the one
//! place replies are handed to clients (with the send timeout and the
//! dropped-reply counter). Used by the ingress (rejections) and the
//! dispatcher (answers).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zeromq::{RouterSendHalf, SocketSend, ZmqMessage};

use crate::supervisor::AgentTable;

/// Where a reply goes.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    /// The ROUTER identity frame of the client's connection.
    pub identity: Bytes,
    /// The client sent an empty delimiter frame (REQ): replies carry one too.
    pub delimited: bool,
}

/// Sends replies to clients; cheap to clone.
#[derive(Clone)]
pub struct Replier {
    half: RouterSendHalf,
    ctx: Arc<AgentTable>,
    timeout: Duration,
}

impl Replier {
    /// A replier over the send half of the ROUTER socket.
    pub fn new(half: RouterSendHalf, ctx: Arc<AgentTable>) -> Replier {
        let timeout = Duration::from_millis(ctx.settings.bus.send_timeout_ms.max(1));
        Replier { half, ctx, timeout }
    }

    /// Sends `body` to `client`. A reply that cannot be handed over within
    /// `bus.send_timeout_ms` or whose client is gone is dropped, logged and
    /// counted (`agentvisor_bus_replies_dropped_total`).
    pub async fn send(&self, client: &ClientAddr, body: Vec<u8>) {
        let mut frames: Vec<Bytes> = Vec::with_capacity(3);
        frames.push(client.identity.clone());
        if client.delimited {
            frames.push(Bytes::new());
        }
        frames.push(Bytes::from(body));
        let Ok(msg) = ZmqMessage::try_from(frames) else { return };
        let mut half = self.half.clone();
        let reason = match tokio::time::timeout(self.timeout, half.send(msg)).await {
            Ok(Ok(())) => {
                self.ctx.metrics.bus_messages.with_label_values(&["out"]).inc();
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reply to a gone client dropped");
                "peer_gone"
            }
            Err(_) => {
                tracing::warn!(timeout_ms = self.timeout.as_millis() as u64, "reply dropped: client too slow");
                "timeout"
            }
        };
        self.ctx.metrics.replies_dropped.with_label_values(&[reason]).inc();
    }
}
