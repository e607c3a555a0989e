//! The ROUTER side: receives `[identity][(empty)][body]` messages, checks
//! framing and size, decodes, checks the envelope's `token` when the daemon
//! asks for one (the task's scope; the token's subject becomes the task's
//! `user`), and hands requests to the dispatcher; sends
//! replies back with a timeout so that a slow or gone client never blocks
//! anyone.
//!
//! REQ clients send `[identity][empty][body]` (the empty delimiter is
//! added by their socket) and get replies with the delimiter; DEALER clients
//! usually send `[identity][body]` and get replies the same way.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use zeromq::{RouterRecvHalf, SocketRecv};

use super::dispatch::Cmd;
use super::envelope::{self, Reply, Request};
use super::reply::{ClientAddr, Replier};
use crate::agents::auth::{Auth, Scope};
use crate::core::{ErrorCode, TaskError};
use crate::supervisor::AgentTable;

/// Receives messages until the socket closes or the dispatcher is gone.
pub async fn run(
    mut rx: RouterRecvHalf,
    replier: Replier,
    ctx: Arc<AgentTable>,
    auth: Arc<Auth>,
    tx: mpsc::UnboundedSender<Cmd>,
) {
    let max = ctx.settings.bus.max_message_bytes;
    loop {
        let msg = match rx.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ROUTER socket closed");
                return;
            }
        };
        let received = Instant::now();
        ctx.metrics.bus_messages.with_label_values(&["in"]).inc();
        let mut frames = msg.into_vecdeque();
        let Some(identity) = frames.pop_front() else { continue };
        let delimited = frames.front().is_some_and(|f| f.is_empty()) && frames.len() > 1;
        if delimited {
            frames.pop_front();
        }
        let client = ClientAddr { identity, delimited };
        let size: usize = frames.iter().map(Bytes::len).sum();
        let request = if size > max {
            Err(envelope::Rejected {
                id: None,
                error: TaskError::new(
                    ErrorCode::MessageTooLarge,
                    format!("message of {size} bytes exceeds bus.max_message_bytes = {max}"),
                ),
            })
        } else if frames.len() != 1 {
            Err(envelope::Rejected {
                id: None,
                error: TaskError::new(
                    ErrorCode::MalformedMessage,
                    format!("expected one body frame after the identity (and empty delimiter), got {}", frames.len()),
                ),
            })
        } else {
            envelope::decode(&frames[0], max).and_then(|d| authenticate(&auth, &ctx, &client, d))
        };
        let cmd = match request {
            Ok(Request::Task(task)) => Cmd::Admit { client, task, received },
            Ok(Request::Cancel { id, target }) => Cmd::Cancel { client, id, target },
            Err(rejected) => {
                ctx.metrics.bad_requests.with_label_values(&[rejected.error.code.as_str()]).inc();
                tracing::info!(task_id = ?rejected.id, code = rejected.error.code.as_str(), error = %rejected.error.message, "bad request");
                let reply = Reply::error(rejected.id, None, rejected.error, None);
                let replier = replier.clone();
                tokio::spawn(async move { replier.send(&client, reply.to_bytes()).await });
                continue;
            }
        };
        if tx.send(cmd).is_err() {
            return;
        }
    }
}

/// The door's check: the scope the request needs, and the token's subject
/// as the task's `user`. Open while no token exists.
fn authenticate(
    auth: &Auth,
    ctx: &AgentTable,
    client: &ClientAddr,
    decoded: envelope::Decoded,
) -> Result<Request, envelope::Rejected> {
    let envelope::Decoded { mut request, token } = decoded;
    if !auth.required() {
        return Ok(request); // open doors: no scope to work out
    }
    let (id, need) = match &request {
        Request::Task(t) => {
            (t.id.clone(), auth.task_scope(&ctx.catalog, t.task_type.as_deref(), t.agent.as_deref(), &t.input))
        }
        Request::Cancel { id, .. } => (id.clone(), Scope::Tasks),
    };
    let who = || format!("bus:{}", hex::encode(&client.identity));
    match auth.check("bus", &who, token.as_deref(), need) {
        Ok(principal) => {
            if let (Request::Task(t), Some(p)) = (&mut request, principal) {
                t.user = Some(p.subject().to_string());
            }
            Ok(request)
        }
        Err(error) => Err(envelope::Rejected { id, error }),
    }
}
