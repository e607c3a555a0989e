//! A bare ROUTER echo on the zeromq crate: the baseline of `agentvisor
//! bench bus --baseline`. One task receives `[identity][(empty)][body]`,
//! reads the body's `id` and sends back `[identity][(empty)][reply]`, where
//! the reply is a fixed reply envelope (in the bench: the daemon's own reply
//! to the same task) with the `id` swapped in, so both sides answer the same
//! bytes. No admission, no agents, no ledger: what zmq.rs costs by itself.

use bytes::Bytes;
use serde::Deserialize;
use tokio::task::JoinHandle;
use zeromq::{RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::envelope::Reply;

/// A running echo; stops when dropped.
pub struct Echo {
    endpoint: String,
    task: JoinHandle<()>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<String>,
}

impl Echo {
    /// Binds `endpoint` (e.g. `tcp://127.0.0.1:0`) and answers every message
    /// with `template`, its `id` replaced by the request's.
    ///
    /// # Errors
    /// The endpoint cannot be bound.
    pub async fn start(endpoint: &str, template: Reply) -> anyhow::Result<Echo> {
        let mut socket = RouterSocket::new();
        let bound = socket.bind(endpoint).await?.to_string();
        let task = tokio::spawn(async move {
            while let Ok(msg) = socket.recv().await {
                let mut frames = msg.into_vec();
                let Some(body) = frames.pop() else { continue };
                let mut reply = template.clone();
                reply.id = serde_json::from_slice::<IdOnly>(&body).ok().and_then(|r| r.id);
                frames.push(Bytes::from(reply.to_bytes()));
                let Ok(out) = ZmqMessage::try_from(frames) else { continue };
                if let Err(e) = socket.send(out).await {
                    tracing::debug!(error = %e, "echo reply dropped");
                }
            }
        });
        Ok(Echo { endpoint: bound, task })
    }

    /// The bound endpoint (`tcp://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}
