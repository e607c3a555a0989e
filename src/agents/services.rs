//! What the composition root gives the agent layer: the daemon's
//! [`Services`]; each behaviour takes only the handles it uses.

use std::sync::Arc;

use super::auth::Auth;
use super::behaviour::Behaviour;
use super::policy::Policy;
use super::tasks::TaskTable;
use crate::config::Settings;
use crate::events::EventBus;
use crate::models::manager::ModelManager;
use crate::routing::cache::ResponseCache;
use crate::routing::router::{LoadProbe, RouterHandle};
use crate::store::Store;
use crate::store::receipts::ReceiptLog;
use crate::store::resources::Ledger;
use crate::supervisor::Fleet;
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
    /// Every task type's schemas and example: the decoding layer.
    pub tasks: Arc<TaskTable>,
    /// ResourceManager's ledger, when the profile includes ResourceManager
    /// (the model manager and process agents reserve through it then).
    pub resources: Option<Arc<Ledger>>,
    /// This daemon run's id (made at each start, shown by `/health`; names
    /// the token governor's `data_dir/runs/<run_id>_summary.md`).
    pub run_id: String,
    /// The response cache HybridRouter consults (CacheManager switches it on).
    pub cache: ResponseCache,
    /// API tokens and the doors' check (AuthenticationAgent's state).
    pub auth: Arc<Auth>,
    /// The policy gate every agent actor runs checked tasks through.
    pub policy: Arc<Policy>,
    /// The receipts writer (HybridRouter's): FeedbackHandler and
    /// LearningManager flush it to read the receipt of a task just answered.
    pub receipts: ReceiptLog,
}

/// Builds a behaviour registered by the composition root for an agent whose
/// behaviour lives above the agent layer (RequestCoordinator owns the bus).
pub type BehaviourFactory = Arc<dyn Fn(&Fleet) -> Arc<dyn Behaviour> + Send + Sync>;
