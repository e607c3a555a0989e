//! The task bus over ZeroMQ (DESIGN §4): a ROUTER socket for tasks (REQ
//! and DEALER clients), a PUB socket for events.
//!
//! Data flow: [`ingress`] (frames → [`envelope`] decode) → [`dispatch`]
//! (admission queue by priority, agent resolution, on-demand start, the
//! agent's work, the reply) → back through [`reply::Replier`];
//! [`publisher`] forwards the event stream. [`client`] is the other end,
//! used by the CLI (`send`, `events`, `bench`).
//!
//! The sockets belong to the RequestCoordinator agent ([`coordinator`],
//! registered by the composition root: the agent layer knows nothing of
//! ZeroMQ): they are bound in its start hook and closed when it stops, so a
//! crash of the coordinator rebinds them on restart.

pub mod client;
pub mod coordinator;
pub mod dispatch;
pub mod envelope;
pub mod ingress;
pub mod publisher;
pub mod reply;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use zeromq::{PubSocket, RouterSocket, Socket, SocketEvent};

use crate::agents::tasks::TaskTable;
use crate::supervisor::Fleet;
pub use coordinator::BusStatus;
use dispatch::{Cmd, Dispatcher, Gauges};

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

/// The running bus: its tasks and bound endpoints.
pub struct Bus {
    tasks: JoinSet<()>,
    /// The ROUTER endpoint as bound (port resolved).
    pub ingress: String,
    /// The PUB endpoint as bound.
    pub events: String,
    /// Queue numbers.
    pub gauges: Arc<Gauges>,
}

async fn bind<S: Socket>(socket: &mut S, endpoint: &str) -> Result<String, BusError> {
    // Right after a restart the previous socket's listener may still be
    // closing: retry briefly.
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
    /// dispatcher and publisher tasks.
    ///
    /// # Errors
    /// [`BusError::Bind`] when an endpoint is taken or invalid.
    pub async fn start(fleet: Fleet, table: Arc<TaskTable>) -> Result<Bus, BusError> {
        let ctx = fleet.ctx().clone();
        let mut router = RouterSocket::new();
        let ingress = bind(&mut router, &ctx.settings.bus.ingress).await?;
        let mut publisher = PubSocket::new();
        let events = bind(&mut publisher, &ctx.settings.bus.events).await?;
        let mut monitor = router.monitor();
        let (send_half, recv_half) = router.split();
        let replier = reply::Replier::new(send_half, ctx.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let gauges = Arc::new(Gauges::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(Dispatcher::new(fleet, table, replier.clone(), tx.clone(), gauges.clone()).run(rx));
        tasks.spawn(ingress::run(recv_half, replier, ctx.clone(), tx.clone()));
        tasks.spawn(publisher::run(publisher, ctx.events.subscribe(), ctx.clone()));
        tasks.spawn(async move {
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
        Ok(Bus { tasks, ingress, events, gauges })
    }

    /// Stops every task; dropping the sockets unbinds the endpoints.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}
