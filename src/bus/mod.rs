//! The task bus over ZeroMQ (DESIGN §4): a ROUTER socket for tasks (REQ
//! and DEALER clients), a PUB socket for events.
//!
//! Data flow: [`ingress`] (frames → [`envelope`] decode) → [`dispatch`]
//! (the admission [`gate`], the admission queue by priority, agent
//! resolution, on-demand start, the agent's work, the reply) → back through
//! [`reply::Replier`]; [`publisher`] forwards the event stream. [`client`]
//! is the other end, used by the CLI (`send`, `events`, `bench`); [`echo`]
//! is a bare ROUTER echo, the baseline `bench bus --baseline` compares with.
//!
//! Lifetime: the bus is infrastructure of the daemon, bound by the
//! composition root when the profile includes RequestCoordinator and kept
//! until the daemon stops — a restart of RequestCoordinator (the agent that
//! reports on it, [`coordinator`]) leaves the sockets bound and every pending
//! reply routable. The dispatcher loop is supervised (BusDispatcher): the
//! [`ledger`] of accepted tasks and the command channel outlive it, so a
//! restarted loop picks up where the failed one stopped. On shutdown the
//! daemon closes the gate and [`Bus::drain`]s: accepted tasks finish within
//! `supervisor.drain_timeout_secs`, the rest are answered `shutting_down`.
//! Every accepted task gets exactly one reply.

pub mod client;
pub mod coordinator;
pub mod dispatch;
pub mod echo;
pub mod envelope;
pub mod gate;
pub mod ingress;
pub mod ledger;
pub mod publisher;
pub mod reply;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::{JoinHandle, JoinSet};
use zeromq::{PubSocket, RouterSocket, Socket, SocketEvent};

use crate::agents::auth::Auth;
use crate::agents::tasks::TaskTable;
use crate::core::{ErrorCode, Fault, TaskError};
use crate::supervisor::Fleet;
pub use coordinator::BusStatus;
use dispatch::{Cmd, Shared};
use envelope::Timings;
use gate::Gate;
use ledger::Stage;

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// An endpoint could not be bound.
    #[error("cannot bind {endpoint}: {reason}")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// The socket error.
        reason: String,
    },
}

/// The bound bus: its sockets' tasks, the state the dispatcher loop
/// shares, and the bound endpoints.
pub struct Bus {
    shared: Arc<Shared>,
    io: Mutex<JoinSet<()>>,
    /// The ROUTER endpoint as bound (port resolved).
    pub ingress: String,
    /// The PUB endpoint as bound.
    pub events: String,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Tasks that finished during the drain.
    pub finished: usize,
    /// Tasks answered `shutting_down` at its deadline.
    pub abandoned: usize,
}

async fn bind<S: Socket>(socket: &mut S, endpoint: &str) -> Result<String, BusError> {
    // A previous daemon's listener may still be closing: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match socket.bind(endpoint).await {
            Ok(ep) => return Ok(ep.to_string()),
            Err(e) if Instant::now() >= deadline => {
                return Err(BusError::Bind { endpoint: endpoint.to_string(), reason: e.to_string() });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl Bus {
    /// Binds `bus.ingress` and `bus.events` and starts the ingress,
    /// publisher and disconnect-monitor tasks. The dispatcher loop is
    /// started by its supervisor ([`Bus::dispatcher`]); until then commands
    /// wait in its channel.
    ///
    /// # Errors
    /// [`BusError::Bind`] when an endpoint is taken or invalid.
    pub async fn bind(fleet: Fleet, table: Arc<TaskTable>, gate: Arc<Gate>, auth: Arc<Auth>) -> Result<Bus, BusError> {
        let ctx = fleet.ctx().clone();
        let mut router = RouterSocket::new();
        let ingress = bind(&mut router, &ctx.settings.bus.ingress).await?;
        let mut publisher = PubSocket::new();
        let events = bind(&mut publisher, &ctx.settings.bus.events).await?;
        let mut monitor = router.monitor();
        let (send_half, recv_half) = router.split();
        let replier = reply::Replier::new(send_half, ctx.clone());
        let shared = Arc::new(Shared::new(fleet, table, replier.clone(), gate));
        let mut io = JoinSet::new();
        io.spawn(ingress::run(recv_half, replier, ctx.clone(), auth, shared.tx.clone()));
        io.spawn(publisher::run(publisher, ctx.events.subscribe(), ctx.clone()));
        let tx = shared.tx.clone();
        io.spawn(async move {
            use futures::StreamExt;
            while let Some(event) = monitor.next().await {
                if let SocketEvent::Disconnected(peer) = event
                    && tx.send(Cmd::ClientGone(peer.into())).is_err()
                {
                    return;
                }
            }
        });
        tracing::info!(ingress, events, "task bus bound");
        Ok(Bus { shared, io: Mutex::new(io), ingress, events })
    }

    /// Starts a dispatcher loop over this bus (the BusDispatcher
    /// component's start).
    pub fn dispatcher(&self) -> Arc<dyn Fn() -> JoinHandle<()> + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || tokio::spawn(dispatch::run(shared.clone())))
    }

    /// Makes the dispatcher loop fail (fault injection; the daemon calls it
    /// only with `testing.fault_injection: true`).
    pub fn inject_fault(&self, fault: Fault) -> bool {
        self.shared.tx.send(Cmd::Fault(fault)).is_ok()
    }

    /// The state `coordinator.status` and `/health` report.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The drain (the admission gate must be closed first): waits up to
    /// `deadline` for every accepted task to be answered, then answers the
    /// rest `shutting_down` (cancelling their work).
    pub async fn drain(&self, deadline: Duration) -> Drained {
        let ledger = &self.shared.ledger;
        let before = ledger.len();
        let until = Instant::now() + deadline;
        while !ledger.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rest = ledger.take_all();
        let abandoned = rest.len();
        for (key, entry) in rest {
            if let Stage::Running(token) = &entry.stage {
                token.cancel();
            }
            let waited = entry.received.elapsed().as_secs_f64() * 1e3;
            let e = TaskError::new(
                ErrorCode::ShuttingDown,
                format!(
                    "the daemon is shutting down: the task did not finish within the drain ({:.1} s)",
                    deadline.as_secs_f64()
                ),
            );
            let timings = Timings { total: waited, ..Default::default() };
            self.shared.answer_error(&entry.client, key.1, Some(entry.agent), e, Some(timings)).await;
        }
        Drained { finished: before.saturating_sub(abandoned), abandoned }
    }

    /// Stops the socket tasks; dropping the sockets unbinds the endpoints.
    pub async fn stop(&self) {
        let mut io = std::mem::take(&mut *self.io.lock());
        io.abort_all();
        while io.join_next().await.is_some() {}
    }
}
