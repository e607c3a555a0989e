//! Behaviour behaviours: Rust code answering tasks in-process, one file per
//! behaviour. Each file documents the task types it handles, their input and
//! output JSON, and its state.
//!
//! | agent | file | task types |
//! | --- | --- | --- |
//! | UnifiedUtilsAgent | [`utils`] | `utils.echo`, `utils.time`, `utils.uuid`, `utils.hash`, `utils.sleep` |
//! | UnifiedSystemAgent | [`system`] | `system.agents`, `system.status`, `system.start`, `system.stop`, `system.restart` |
//! | LazyLoader | [`lazy_loader`] | `lazy.ensure`, `lazy.status` |
//! | RequestCoordinator | `bus::coordinator` (registered by the composition root) | `coordinator.status`; owns the ZeroMQ sockets |
//! | SystemDigitalTwin | [`digital_twin`] | `twin.snapshot`, `twin.system_load` |
//! | SessionMemoryAgent | [`session_memory`] | `session.append`, `session.history`, `session.clear` |
//! | MemoryOrchestratorService | [`memory`] | `memory.store`, `memory.get`, `memory.delete`, `memory.search`, `memory.promote`, `memory.stats`; TTL expiry, short/long-term tiers |
//! | MemoryClient | [`memory`] | `memory.recall`, `memory.search` (forwarded to MemoryOrchestratorService, else `agent_unavailable`) |
//! | KnowledgeBase | [`memory`] | `kb.add`, `kb.search` (FTS5, bm25), `kb.delete` |
//! | ServiceRegistry | [`service_registry`] | `registry.register`, `registry.heartbeat`, `registry.discover`, `registry.promote`, `registry.deregister` (also over HTTP `/registry/*`) |
//! | StreamingTTSAgent | [`streaming_tts`] | `tts.stream` (through TTSService, one chunk per sentence) |
//! | ModelManagerSuite | [`models`] | `models.list`, `models.load`, `models.unload`, `models.status` |
//! | VRAMOptimizerAgent | [`models`] | `vram.status`, `vram.evict_idle`; polls GPU (NVML) or host memory |
//! | TinyLlamaServiceEnhanced | [`models`] | `tiny_generation`, `tiny.status` |
//! | ResourceManager | [`resources`] | `resource.request`, `resource.release`, `resource.renew`, `resource.status`; TTL expiry, holder-down release |
//! | AsyncProcessor | [`jobs`] | `async.submit`, `async.status`, `async.result`, `async.cancel`, `async.list`; durable jobs |
//! | TaskScheduler | [`schedules`] | `schedule.add`, `schedule.list`, `schedule.cancel`; durable schedules |
//! | GoalManager | [`goals`] | `goal.create`, `goal.status`, `goal.list`, `goal.cancel`; subtasks planned through the arbiter, run as jobs |
//! | MoodTrackerAgent | [`mood`] | `mood.record`, `mood.current`, `mood.history`; exponential decay (`mood.half_life_secs`) |
//! | Responder | [`responder`] | `response.compose` (EmotionEngine, persona, EmpathyAgent), `response.speak` (StreamingTTSAgent) |
//! | TutoringAgent | [`tutoring`] | `tutoring.session_start`, `tutoring.progress`, `tutoring.session_end`; questions and grading by TutorAgent, mastery picks the difficulty |
//! | ProactiveAgent | [`proactive`] | `proactive.triggers`, `proactive.suggest`; rules (schedule, mood drop, idle user, context usage) from `proactive.rules`, texts by an llm agent |
//! | DynamicIdentityAgent | [`identity`] | `identity.set`, `identity.get`, `identity.list`; personas put first in llm prompts |
//! | UnifiedWebAgent | [`web`] | `web_fetch`: readable text and title; SSRF-safe, robots.txt, size and time limits |
//! | FileSystemAssistantAgent | [`files`] | `files.list`, `files.read`, `files.search` under `files.roots`, `.gitignore`-aware |
//! | DreamingModeAgent | [`dreaming`] | `dreaming.consolidate`, `dreaming.status`; idle-time merging, promotion and summaries of memories |
//! | AdvancedRouter | [`advanced_router`] | `router.route`, `router.capabilities`: the provider matrix, cheapest or fastest |
//! | RemoteConnectorAgent | [`remote`] | `remote.connect`, `remote.status`, `remote.call`: remote backends, registries and nodes |
//! | ContextManager | [`context`] | `context.usage`, `context.save_state`, `context.summarize`, `context.resume`; the token governor |
//! | ProactiveContextMonitor | [`context`] | `context_monitor.status`, `context_monitor.check`; summaries ahead of the hard max |
//! | CacheManager | [`cache`] | `cache.get`, `cache.put`, `cache.invalidate`, `cache.stats`; switches HybridRouter's response cache on |
//! | TieredResponder | [`tiered`] | `basic_qa`, `tiered_response`; cache, local, cloud by urgency and load |
//! | AuthenticationAgent | [`auth`] | `auth.token_create`, `auth.token_verify`, `auth.token_revoke`, `auth.session`; API tokens as keyed hashes |
//! | FeedbackHandler | [`feedback`] | `feedback.record`, `feedback.list`: ratings tied to the task's receipt |
//! | LearningManager | [`learning`] | `preferences.set`, `preferences.get` (per user), `corrections.record`, `corrections.list` |
//! | AgentTrustScorer | [`trust`] | `trust.score`, `trust.record`: a decayed Beta posterior per agent, fed by task outcomes and ratings |
//! | FusedAudioPreprocessor | [`preprocessor`] | `audio.preprocess`, `audio.resample`, `audio.vad`: WAV decoding, resampling, normalising, voice activity detection ([`audio`]) |
//! | VoiceProfilingAgent | [`voice`] | `voice.profile`, `voice.features`: pitch (YIN), energy, speaking rate |
//! | WakeWordDetector | [`wake_word`] | `wake_word.detect`, `wake_word.configure`: fuzzy match of configured words in a transcript |
//! | StreamingLanguageAnalyzer | [`language`] | `language_identification`, `language.route` (TranslationService for text not in the target language) |
//! | ObservabilityHub, ObservabilityHub_PC2 | [`observability`] | `observability.status`, `observability.metrics`, `observability.pc2.status`, `observability.pc2.metrics` |
//!
//! Every other builtin agent answers tasks with `not_implemented` until its
//! issue lands — never with a made-up answer.

pub mod advanced_router;
pub mod audio;
pub mod auth;
pub mod cache;
pub mod context;
pub mod digital_twin;
pub mod dreaming;
pub mod feedback;
pub mod files;
pub mod goals;
pub mod identity;
pub mod jobs;
pub mod language;
pub mod lazy_loader;
pub mod learning;
pub mod memory;
pub mod models;
pub mod mood;
pub mod observability;
pub mod preprocessor;
pub mod proactive;
pub mod remote;
pub mod resources;
pub mod responder;
pub mod schedules;
pub mod service_registry;
pub mod session_memory;
pub mod streaming_tts;
pub mod system;
pub mod tiered;
pub mod trust;
pub mod tutoring;
pub mod utils;
pub mod voice;
pub mod wake_word;
pub mod web;

use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) use super::behaviour::{
    AgentInput, Answer, Background, Behaviour, Empty, Name, Null, Text, extract_json, unknown_type,
};
use super::governor::Governor;
use super::services::Services;
use super::tasks::RustTask;
use crate::supervisor::Fleet;

/// The task types declared in Rust, by behaviour name (the agent name unless
/// its spec sets `runtime.behaviour`): the builtin half of the task-type
/// table ([`crate::agents::tasks::TaskTable::build`]).
pub(crate) fn rust_tasks() -> BTreeMap<&'static str, Vec<RustTask>> {
    BTreeMap::from([
        ("UnifiedUtilsAgent", utils::tasks()),
        (memory::ORCHESTRATOR, memory::orchestrator_tasks()),
        (memory::CLIENT, memory::client_tasks()),
        (memory::KNOWLEDGE_BASE, memory::knowledge_base_tasks()),
        (service_registry::AGENT, service_registry::tasks()),
        ("UnifiedSystemAgent", system::tasks()),
        ("LazyLoader", lazy_loader::tasks()),
        ("SystemDigitalTwin", digital_twin::tasks()),
        ("SessionMemoryAgent", session_memory::tasks()),
        ("StreamingTTSAgent", streaming_tts::tasks()),
        ("ModelManagerSuite", models::suite_tasks()),
        ("VRAMOptimizerAgent", models::vram_tasks()),
        ("TinyLlamaServiceEnhanced", models::tiny_tasks()),
        (resources::AGENT, resources::tasks()),
        (jobs::AGENT, jobs::tasks()),
        (schedules::AGENT, schedules::tasks()),
        (identity::AGENT, identity::tasks()),
        (goals::AGENT, goals::tasks()),
        (mood::AGENT, mood::tasks()),
        (responder::AGENT, responder::tasks()),
        (tutoring::AGENT, tutoring::tasks()),
        (proactive::AGENT, proactive::tasks()),
        (web::AGENT, web::tasks()),
        (files::AGENT, files::tasks()),
        (dreaming::AGENT, dreaming::tasks()),
        (advanced_router::AGENT, advanced_router::tasks()),
        (remote::AGENT, remote::tasks()),
        (auth::AGENT, auth::tasks()),
    ])
}

/// The builtin behaviour named `name`, when it is built; each behaviour is
/// given only the services it uses.
pub(crate) fn behaviour_for(name: &str, services: &Services, fleet: &Fleet) -> Option<Arc<dyn Behaviour>> {
    if let Some(b) = memory::behaviour(name, services, fleet)
        .or_else(|| service_registry::behaviour(name, services, fleet))
        .or_else(|| models::behaviour(name, services, fleet))
    {
        return Some(b);
    }
    match name {
        "UnifiedUtilsAgent" => Some(Arc::new(utils::Utils)),
        auth::AGENT => Some(Arc::new(auth::Authentication::new(services.auth.clone()))),
        "UnifiedSystemAgent" => Some(Arc::new(system::SystemAdmin { fleet: fleet.clone() })),
        "LazyLoader" => Some(Arc::new(lazy_loader::LazyLoaderAgent { fleet: fleet.clone() })),
        "SystemDigitalTwin" => {
            Some(Arc::new(digital_twin::DigitalTwin::new(fleet.ctx().clone(), services.load.clone())))
        }
        "SessionMemoryAgent" => Some(Arc::new(session_memory::SessionMemory { store: services.store.clone() })),
        "StreamingTTSAgent" => Some(Arc::new(streaming_tts::StreamingTts { peers: Arc::new(fleet.clone()) })),
        jobs::AGENT => Some(Arc::new(jobs::AsyncProcessor::new(
            services.store.clone(),
            fleet.clone(),
            services.tasks.clone(),
            services.settings.jobs.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        schedules::AGENT => Some(Arc::new(schedules::TaskScheduler::new(
            services.store.clone(),
            fleet.clone(),
            services.tasks.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        goals::AGENT => Some(Arc::new(goals::GoalManager::new(
            services.store.clone(),
            Arc::new(fleet.clone()),
            services.tasks.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        mood::AGENT => Some(Arc::new(mood::MoodTracker::new(
            services.store.clone(),
            services.settings.mood.half_life_secs,
            services.events.clone(),
            services.metrics.clone(),
        ))),
        responder::AGENT => Some(Arc::new(responder::Responder::new(
            Arc::new(fleet.clone()),
            services.store.clone(),
            services.settings.identity.clone(),
        ))),
        proactive::AGENT => Some(Arc::new(proactive::Proactive::new(
            services.store.clone(),
            Arc::new(fleet.clone()),
            services.tasks.clone(),
            services.settings.proactive.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        tutoring::AGENT => Some(Arc::new(tutoring::Tutoring::new(Arc::new(fleet.clone()), services.store.clone()))),
        identity::AGENT => Some(Arc::new(identity::DynamicIdentity::new(
            services.store.clone(),
            services.settings.identity.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        web::AGENT => Some(Arc::new(web::WebFetcher::new(services.settings.web.clone(), services.metrics.clone()))),
        files::AGENT => {
            Some(Arc::new(files::FileSystemAssistant::new(services.settings.files.clone(), services.metrics.clone())))
        }
        dreaming::AGENT => Some(Arc::new(dreaming::Dreaming::new(
            services.store.clone(),
            services.router.clone(),
            services.events.clone(),
            services.metrics.clone(),
            services.settings.dreaming.clone(),
            services.settings.memory.clone(),
            std::time::Duration::from_secs_f64(services.settings.tasks.call_timeout_secs),
        ))),
        advanced_router::AGENT => Some(Arc::new(advanced_router::AdvancedRouter::new(
            services.store.clone(),
            services.tasks.clone(),
            Arc::new(fleet.clone()),
            services.metrics.clone(),
        ))),
        remote::AGENT => Some(Arc::new(remote::RemoteConnector::new(
            &services.settings.backends,
            services.router.clone(),
            services.events.clone(),
            services.metrics.clone(),
            std::time::Duration::from_secs_f64(services.settings.tasks.call_timeout_secs),
        ))),
        context::MANAGER => Some(Arc::new(context::ContextManager::new(Governor::new(services)))),
        context::MONITOR => {
            Some(Arc::new(context::ContextMonitor::new(Governor::new(services), services.events.clone())))
        }
        cache::AGENT => Some(Arc::new(cache::CacheManager::new(services.cache.clone()))),
        tiered::AGENT => Some(Arc::new(tiered::TieredResponder::new(
            services.router.clone(),
            services.load.clone(),
            services.settings.routing.tiers.high_load_percent,
            services.settings.tasks.call_timeout(),
            Arc::new(fleet.clone()),
        ))),
        observability::HUB | observability::HUB_PC2 => Some(Arc::new(observability::Observability::new(
            fleet.ctx().clone(),
            services.router.clone(),
            services.run_id.clone(),
            name == observability::HUB_PC2,
        ))),
        feedback::AGENT => Some(Arc::new(feedback::FeedbackHandler::new(
            services.store.clone(),
            services.receipts.clone(),
            fleet.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        learning::AGENT => Some(Arc::new(learning::LearningManager::new(
            services.store.clone(),
            services.receipts.clone(),
            services.settings.identity.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        trust::AGENT => Some(Arc::new(trust::AgentTrustScorer::new(
            services.store.clone(),
            &services.settings.trust,
            fleet.clone(),
            services.events.clone(),
            services.metrics.clone(),
        ))),
        preprocessor::AGENT => Some(Arc::new(preprocessor::FusedAudioPreprocessor::new(
            services.settings.media.clone(),
            services.metrics.clone(),
        ))),
        voice::AGENT => {
            Some(Arc::new(voice::VoiceProfiling::new(services.settings.media.clone(), services.metrics.clone())))
        }
        wake_word::AGENT => Some(Arc::new(wake_word::WakeWordDetector::new(
            services.settings.wake_word.clone(),
            services.metrics.clone(),
        ))),
        language::AGENT => Some(Arc::new(language::LanguageAnalyzer::new(
            Arc::new(fleet.clone()),
            services.settings.language.clone(),
            services.metrics.clone(),
        ))),
        resources::AGENT => {
            services.resources.clone().map(|l| Arc::new(resources::ResourceManager::new(l)) as Arc<dyn Behaviour>)
        }
        _ => None,
    }
}
/// The task-type table of the real catalog (`agents/`) with the Rust
/// declarations: the fleet-wide checks of issue 10.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::agents::tasks::{Assembly, TaskTable, testing};
    use crate::config::catalog::Catalog;
    use crate::core::ErrorCode;

    /// The table of the real catalog (`agents/`) and the real Rust declarations.
    fn real() -> Assembly {
        let catalog = Catalog::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/agents")))
            .unwrap_or_else(|e| panic!("the catalog does not load: {e}"));
        TaskTable::assemble(catalog.agents.values().map(|spec| spec.as_ref()), &rust_tasks())
    }

    #[test]
    fn every_declared_type_is_valid_and_its_examples_validate_and_decode() {
        let Assembly { table, problems, .. } = real();
        assert!(problems.is_empty(), "{problems:#?}");
        for (behaviour, declared) in rust_tasks() {
            for t in declared {
                let def = table.get(t.task_type).unwrap_or_else(|| panic!("{} missing", t.task_type));
                assert_eq!((def.agent.as_str(), def.runtime), (behaviour, "builtin"));
            }
        }
        testing::assert_examples_validate_and_decode(&table);
        let listed = table.to_json();
        assert_eq!(listed.as_array().map(Vec::len), Some(table.len()));
        assert_eq!(listed[0]["type"], json!(table.iter().next().map(|d| d.task_type.clone())));
        for key in ["type", "agent", "runtime", "summary", "input_schema", "output_schema", "example"] {
            assert!(listed[0].get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn every_handled_type_has_a_schema() {
        let Assembly { problems, undeclared, .. } = real();
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(undeclared.is_empty(), "{} handled types have no schema: {undeclared:#?}", undeclared.len());
    }

    /// `docs/tasks.md` equals `markdown()`; `AGENTVISOR_BLESS=1` rewrites it.
    #[test]
    fn docs_tasks_md_is_fresh() {
        let Assembly { table, problems, .. } = real();
        assert!(problems.is_empty(), "{problems:#?}");
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tasks.md"));
        let fresh = table.markdown();
        if std::env::var("AGENTVISOR_BLESS").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &fresh).unwrap();
            return;
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        let first_difference = on_disk.lines().zip(fresh.lines()).position(|(a, b)| a != b);
        assert!(
            on_disk == fresh,
            "docs/tasks.md is stale (first difference at line {}): regenerate it with \
             `cargo run -- tasks --markdown > docs/tasks.md`, or \
             `AGENTVISOR_BLESS=1 cargo test --lib docs_tasks_md_is_fresh -- --ignored`",
            first_difference.map_or_else(|| on_disk.lines().count().min(fresh.lines().count()) + 1, |i| i + 1)
        );
    }

    #[test]
    fn decode_names_the_path_of_a_wrong_input() {
        let table = real().table;
        let e = table.decode("utils.hash", &json!({"text": "a", "algorithm": "md4"})).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert_eq!(e.message, "input of utils.hash at /algorithm: unknown variant `md4`, expected `sha256`");
        let e = table.decode("utils.hash", &json!({"text": "a", "salt": "x"})).unwrap_err();
        assert!(e.message.starts_with("input of utils.hash at "), "{e}");
        assert!(e.message.contains("unknown field `salt`"), "{e}");
        let e = table.decode("utils.sleep", &json!("forever")).unwrap_err();
        assert!(e.message.starts_with("input of utils.sleep at the top level: "), "{e}");
        let e = table.decode("no.such.type", &json!("hi")).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownTaskType);
        assert!(table.decode("utils.sleep", &json!({"seconds": 1.5})).is_ok());
    }

    #[test]
    fn markdown_lists_every_type_with_its_schemas() {
        let table = real().table;
        let md = table.markdown();
        assert!(md.starts_with("# Task types\n"));
        assert!(md.contains("`agentvisor tasks --markdown`"));
        assert!(
            md.contains("| [`utils.hash`](#utilshash) | UnifiedUtilsAgent | builtin | The SHA-256 digest of a text |")
        );
        assert!(md.contains("\n## `utils.hash`\n"));
        assert_eq!(md.matches("\n## `").count(), table.len());
        assert_eq!(md.matches("```json\n").count(), 3 * table.len());
    }

    #[test]
    fn random_inputs_get_a_typed_value_or_invalid_field_with_a_path() {
        testing::assert_decoding_layer_holds(&real().table, 64);
    }
}
