//! A process agent's `resources:` (its spec): checked against what the
//! machine has, and reserved through ResourceManager's ledger before its
//! child starts (holder: the agent), released when it stops. Without
//! ResourceManager in the profile only the check against the machine is
//! made (capacity detected as the ledger would).

use crate::config::spec::AgentSpec;
use crate::store::resources::{Amounts, Ask, Capacity, LedgerError, Owner};
use crate::supervisor::StartError;

use super::Services;

/// Checks and reserves `spec.resources`.
///
/// # Errors
/// [`StartError::Unavailable`] when the machine has less than the spec asks
/// (e.g. a GPU on a machine without one), naming what is short;
/// [`StartError::Failed`] when other holders have it now.
pub(crate) async fn reserve(spec: &AgentSpec, services: &Services) -> Result<(), StartError> {
    let Some(r) = &spec.resources else { return Ok(()) };
    let amounts = Amounts {
        cpu: r.cpu,
        memory_bytes: r.memory_bytes,
        gpu: r.gpu,
        gpu_memory_bytes: r.gpu_memory_bytes,
        ports: r.ports,
    };
    let capacity = match &services.resources {
        Some(ledger) => ledger.capacity().clone(),
        None => {
            let wanted = services.settings.resources.clone();
            tokio::task::spawn_blocking(move || Capacity::detect(&wanted)).await.map_err(|e| StartError::Failed {
                agent: spec.name.clone(),
                reason: format!("capacity detection failed: {e}"),
            })?
        }
    };
    let short: Vec<String> = amounts
        .each()
        .into_iter()
        .zip(capacity.amounts.each())
        .filter(|((_, asked), (_, has))| asked > has)
        .map(|((name, asked), (_, has))| format!("{name}: needs {asked}, the machine has {has}"))
        .collect();
    if !short.is_empty() {
        return Err(StartError::Unavailable {
            agent: spec.name.clone(),
            reason: format!("its resources exceed the machine ({})", short.join("; ")),
        });
    }
    let Some(ledger) = &services.resources else { return Ok(()) };
    let ask = Ask {
        holder: spec.name.clone(),
        amounts,
        ttl_seconds: None,
        wait: std::time::Duration::ZERO,
        owner: Owner::Agent,
    };
    match ledger.reserve_now(ask) {
        Ok(_) => Ok(()),
        Err(e @ LedgerError::Denied { .. }) => {
            Err(StartError::Failed { agent: spec.name.clone(), reason: format!("resources not free: {e}") })
        }
        Err(e) => Err(StartError::Failed { agent: spec.name.clone(), reason: e.to_string() }),
    }
}

/// Releases what [`reserve`] reserved for `spec`'s agent.
pub(crate) fn release(spec: &AgentSpec, services: &Services) {
    if let (Some(_), Some(ledger)) = (&spec.resources, &services.resources) {
        ledger.release_holder_now(&spec.name, "holder_stopped");
    }
}
