//! What the composition root gives the agent layer: the daemon's
//! [`Services`] (each behaviour takes only the handles it uses), and the
//! [`Spawner`] that turns a spec into a running agent actor for the
//! supervisors (it implements [`AgentFactory`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

use super::actor::{AgentActor, AgentArgs};
use super::builtin::Behaviour;
use crate::config::Settings;
use crate::config::spec::AgentSpec;
use crate::events::EventBus;
use crate::models::manager::ModelManager;
use crate::routing::router::{LoadProbe, RouterHandle};
use crate::store::Store;
use crate::supervisor::{AgentFactory, AgentMsg, Fleet, StartError};
use crate::telemetry::metrics::Metrics;

/// The daemon's shared services, built once by the composition root.
pub struct Services {
    /// Daemon settings.
    pub settings: Arc<Settings>,
    /// The SQLite store.
    pub store: Store,
    /// Local models (ModelManagerSuite's engine; the embedded backend's queue).
    pub models: Arc<ModelManager>,
    /// The event stream.
    pub events: EventBus,
    /// Metrics.
    pub metrics: Metrics,
    /// CPU load, written by SystemDigitalTwin, read by HybridRouter.
    pub load: LoadProbe,
    /// HybridRouter.
    pub router: RouterHandle,
}

/// Builds a behaviour registered by the composition root for an agent whose
/// behaviour lives above the agent layer (RequestCoordinator owns the bus).
pub type BehaviourFactory = Arc<dyn Fn(&Fleet) -> Arc<dyn Behaviour> + Send + Sync>;

/// Spawns agent actors: the agent layer's [`AgentFactory`].
pub struct Spawner {
    services: Arc<Services>,
    registered: BTreeMap<String, BehaviourFactory>,
}

impl Spawner {
    /// A spawner giving agents `services`.
    pub fn new(services: Arc<Services>) -> Spawner {
        Spawner { services, registered: BTreeMap::new() }
    }

    /// Registers the behaviour of the builtin behaviour name `name`
    /// (the agent name unless its spec names one).
    pub fn register(&mut self, name: &str, factory: BehaviourFactory) {
        self.registered.insert(name.to_string(), factory);
    }
}

#[async_trait]
impl AgentFactory for Spawner {
    async fn spawn(
        &self,
        spec: Arc<AgentSpec>,
        fleet: Fleet,
        deadline: Option<Instant>,
        supervisor: ActorCell,
    ) -> Result<ActorRef<AgentMsg>, StartError> {
        let name = spec.name.clone();
        let actor_name = fleet.ctx().actor_name(&name);
        let registered = self.registered.get(spec.behaviour_name()).map(|f| f(&fleet));
        let args = AgentArgs { spec, fleet, services: self.services.clone(), registered, deadline };
        match Actor::spawn_linked(Some(actor_name), AgentActor, args, supervisor).await {
            Ok((actor, _join)) => Ok(actor),
            Err(SpawnErr::StartupFailed(err)) => match err.downcast::<StartError>() {
                Ok(e) => Err(*e),
                Err(other) => Err(StartError::Failed { agent: name, reason: other.to_string() }),
            },
            Err(other) => Err(StartError::Failed { agent: name, reason: other.to_string() }),
        }
    }
}
