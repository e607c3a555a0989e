//! Hybrid model routing (DESIGN §5): which backend answers an agent's model call.
//!
//! Where it sits: between the agents and the backends. LLM agents never call
//! a backend directly; they ask the HybridRouter actor, which
//!
//! 1. decides with the pure [`policy::Policy`] (complexity from the task, the
//!    rules or the agent; side local or cloud; tier L1/L2/L3; a chain of
//!    backends with its failover tail),
//! 2. walks the decision's chain in order, asking each backend's
//!    [`breaker::CircuitBreaker`] before calling it through
//!    [`crate::backends::ChatBackend`] and reporting the outcome back,
//! 3. records a receipt of which backend answered, after which fallbacks.
//!
//! - [`policy`]: the routing decision, pure and allocation-light (p99 well
//!   under 20 µs; `cargo bench --bench routing`).
//! - [`breaker`]: one circuit breaker per backend, driven by explicit instants.
//! - [`content`]: content-aware routing: a request's route and complexity
//!   estimated from its text against labelled examples.
//! - [`cache`]: the response cache of deterministic calls (CacheManager's).
//! - [`measure`]: a prompt's tokens on the model that would serve it (the token governor's).

pub mod breaker;
pub mod cache;
pub mod content;
pub mod measure;
pub mod policy;
pub mod router;
