//! The root supervisor: parent of the group supervisors. It receives
//! escalations (an agent of a group went `fatal`), logs and counts them, and
//! keeps the rest of the fleet running: an agent's failure never stops the
//! daemon (DESIGN §2). Only an infrastructure component past its restart
//! intensity does (see [`super::infra`]).

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;

use super::table::AgentTable;
use crate::core::Event;

/// Messages of [`RootSupervisor`].
pub enum RootMsg {
    /// An agent of `group` went fatal.
    Escalate {
        /// The group.
        group: String,
        /// The fatal agent.
        agent: String,
        /// Why.
        reason: String,
    },
}

/// The root supervisor actor.
pub struct RootSupervisor;

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = Arc<AgentTable>;
    type Arguments = Arc<AgentTable>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RootMsg>,
        ctx: Arc<AgentTable>,
    ) -> Result<Arc<AgentTable>, ActorProcessingErr> {
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RootMsg>,
        msg: RootMsg,
        ctx: &mut Arc<AgentTable>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::Escalate { group, agent, reason } => {
                tracing::error!(
                    group,
                    agent,
                    reason,
                    "agent is fatal; escalated to the root, the rest of the fleet keeps running"
                );
                ctx.metrics.escalations.with_label_values(&[&group]).inc();
                ctx.events.emit(Event::GroupEscalated { group, agent, reason });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RootMsg>,
        evt: SupervisionEvent,
        ctx: &mut Arc<AgentTable>,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let group = cell.get_name().unwrap_or_default();
            tracing::error!(group, error = %err, "group supervisor failed");
            ctx.events.emit(Event::GroupFailed { group, reason: err.to_string() });
        }
        Ok(())
    }
}
