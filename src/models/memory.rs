//! Model memory probes: how much memory the local models have, and how much is
//! left.
//!
//! A [`MemoryProbe`] reads GPU memory through NVML ([`NvmlProbe`], crate
//! `nvml-wrapper`) when the NVIDIA management library and a GPU are present,
//! and host memory through `sysinfo` ([`HostProbe`]) otherwise. [`detect`]
//! picks one; a missing NVML library is a normal state (CPU-only machines),
//! logged once at info level, never a panic. NVML is loaded at run time
//! (`libnvidia-ml.so` through `dlopen`), so there is no link-time dependency.
//!
//! Where it sits: VRAMOptimizerAgent and ModelManagerSuite read it to decide
//! what fits ([`budget_bytes`] turns a percentage into the byte budget).
//! Every read is blocking (NVML and `/proc` calls): callers run it off the
//! async runtime, in `tokio::task::spawn_blocking`.
//!
//! The reading logic sits behind [`GpuDevice`] so it is unit-tested with a
//! fake device; the real NVML path (`NvmlProbe` on a live GPU) was not
//! exercised here, the development machine has no GPU and no `libnvidia-ml`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::{MemoryInfo, ProcessInfo};
use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Where a reading comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySource {
    /// GPU memory, read through NVML.
    Gpu,
    /// Host memory (RAM), read through `sysinfo`.
    Host,
}

impl MemorySource {
    /// The lower-case name: `"gpu"` or `"host"` (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Gpu => "gpu",
            MemorySource::Host => "host",
        }
    }
}

/// Memory of one process on the device: NVML's running compute processes for
/// a GPU; this process for the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessMemory {
    /// Process id.
    pub pid: u32,
    /// Bytes the process uses on the device; `None` when the driver does not
    /// say (NVML `UsedGpuMemory::Unavailable`, e.g. under Windows WDDM).
    pub used_bytes: Option<u64>,
}

/// One memory reading, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReading {
    /// GPU or host.
    pub source: MemorySource,
    /// The GPU's name, or `"host"`.
    pub device: String,
    /// Total memory of the device.
    pub total_bytes: u64,
    /// Memory not available to new allocations: `total - free` (for a GPU
    /// this includes the driver's reserved memory).
    pub used_bytes: u64,
    /// Memory available to new allocations (host: the OS's available memory).
    pub free_bytes: u64,
    /// Per-process usage, when known (may be empty).
    pub processes: Vec<ProcessMemory>,
}

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// An NVML call failed (GPU lost, driver error, ...).
    #[error("nvml: {0}")]
    Nvml(#[from] NvmlError),
    /// `sysinfo` could not read host memory.
    #[error("host memory unavailable")]
    Host,
}

/// A memory reader. Blocking: callers run it off the async runtime
/// (`spawn_blocking`).
pub trait MemoryProbe: Send + Sync {
    /// Where this probe's readings come from.
    fn source(&self) -> MemorySource;
    /// Takes one reading now.
    fn read(&self) -> Result<MemoryReading, ProbeError>;
}

/// The NVML device calls a reading needs, with nvml-wrapper's real types, so
/// the reading logic ([`gpu_reading`]) is unit-tested without a GPU.
pub trait GpuDevice {
    /// The device's product name.
    fn name(&self) -> Result<String, NvmlError>;
    /// Total, free, used and reserved frame-buffer memory.
    fn memory_info(&self) -> Result<MemoryInfo, NvmlError>;
    /// Processes with a compute context on the device.
    fn running_compute_processes(&self) -> Result<Vec<ProcessInfo>, NvmlError>;
}

impl GpuDevice for nvml_wrapper::Device<'_> {
    fn name(&self) -> Result<String, NvmlError> {
        nvml_wrapper::Device::name(self)
    }

    fn memory_info(&self) -> Result<MemoryInfo, NvmlError> {
        nvml_wrapper::Device::memory_info(self)
    }

    fn running_compute_processes(&self) -> Result<Vec<ProcessInfo>, NvmlError> {
        nvml_wrapper::Device::running_compute_processes(self)
    }
}

/// Turns one device's answers into a reading.
///
/// Errors from `memory_info` and `name` are returned as [`ProbeError::Nvml`];
/// an error from the per-process list is not fatal (the list is then empty,
/// logged at debug). `used_bytes` is `total - free`, so memory NVML reports as
/// reserved by the driver counts as used, as on the host.
pub(crate) fn gpu_reading(device: &impl GpuDevice) -> Result<MemoryReading, ProbeError> {
    let info = device.memory_info()?;
    let name = device.name()?;
    let processes = match device.running_compute_processes() {
        Ok(list) => list
            .into_iter()
            .map(|p| ProcessMemory {
                pid: p.pid,
                used_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                },
            })
            .collect(),
        Err(e) => {
            tracing::debug!(device = %name, error = %e, "NVML per-process memory unavailable");
            Vec::new()
        }
    };
    let free = info.free.min(info.total);
    Ok(MemoryReading {
        source: MemorySource::Gpu,
        device: name,
        total_bytes: info.total,
        used_bytes: info.total - free,
        free_bytes: free,
        processes,
    })
}

/// GPU memory of one NVML device.
///
/// Owns the NVML handle (shut down on drop) and the device index; the
/// `Device` borrows `Nvml`, so it is fetched again on each read.
pub struct NvmlProbe {
    nvml: Nvml,
    device_index: u32,
}

impl NvmlProbe {
    /// Initializes NVML and checks that device `device_index` exists.
    ///
    /// Fails with `LibloadingError` when `libnvidia-ml` is absent,
    /// `DriverNotLoaded` without a driver, `InvalidArg` for a missing index.
    pub fn new(device_index: u32) -> Result<NvmlProbe, NvmlError> {
        let nvml = Nvml::init()?;
        nvml.device_by_index(device_index)?;
        Ok(NvmlProbe { nvml, device_index })
    }
}

impl MemoryProbe for NvmlProbe {
    fn source(&self) -> MemorySource {
        MemorySource::Gpu
    }

    fn read(&self) -> Result<MemoryReading, ProbeError> {
        let device = self.nvml.device_by_index(self.device_index)?;
        gpu_reading(&device)
    }
}

/// Host memory (RAM) through `sysinfo`; the process list holds this process
/// (its resident set size).
pub struct HostProbe {
    /// `None` when `System::new` failed; retried on the next read.
    system: Mutex<Option<System>>,
}

impl HostProbe {
    /// A host probe. Never fails: if `sysinfo` cannot start now, reads retry
    /// and report [`ProbeError::Host`] meanwhile.
    pub fn new() -> HostProbe {
        HostProbe { system: Mutex::new(System::new().ok()) }
    }
}

impl Default for HostProbe {
    fn default() -> Self {
        HostProbe::new()
    }
}

impl MemoryProbe for HostProbe {
    fn source(&self) -> MemorySource {
        MemorySource::Host
    }

    fn read(&self) -> Result<MemoryReading, ProbeError> {
        // A poisoned lock only means another reader panicked mid-refresh;
        // the System is refreshed below anyway.
        let mut guard = self.system.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            *guard = System::new().ok();
        }
        let sys = guard.as_mut().ok_or(ProbeError::Host)?;
        sys.refresh_memory();
        let total = sys.total_memory();
        if total == 0 {
            return Err(ProbeError::Host);
        }
        let free = sys.available_memory().min(total);

        let pid = std::process::id();
        let spid = Pid::from_u32(pid);
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[spid]),
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let own = sys.process(spid).map(|p| p.memory());

        Ok(MemoryReading {
            source: MemorySource::Host,
            device: "host".to_string(),
            total_bytes: total,
            used_bytes: total - free,
            free_bytes: free,
            processes: vec![ProcessMemory { pid, used_bytes: own }],
        })
    }
}

/// Set once the "model memory is host memory" line has been logged at info.
static HOST_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// Logs why the host probe is used: info the first time in this process,
/// debug afterwards.
fn log_host_fallback(reason: &str) {
    if !HOST_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::info!("{reason}: model memory is host memory; the embedded backend runs on CPU");
    } else {
        tracing::debug!("{reason}: model memory is host memory");
    }
}

/// A readable reason for an NVML start-up failure.
fn nvml_reason(err: &NvmlError, device_index: u32) -> String {
    match err {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound | NvmlError::FailedToLoadSymbol(_) => {
            format!("NVML not available ({err})")
        }
        NvmlError::DriverNotLoaded => "NVML not available (NVIDIA driver not loaded)".to_string(),
        NvmlError::InvalidArg | NvmlError::NotFound => format!("NVML has no GPU at index {device_index} ({err})"),
        _ => format!("NVML failed ({err})"),
    }
}

/// The probe to use: NVML device `device_index` when `Nvml::init()` succeeds
/// and the device exists; otherwise [`HostProbe`], after one info log line
/// saying why (once per process; later fallbacks log at debug). `gpu: false`
/// skips NVML entirely. Never panics. Blocking (loads NVML).
pub(crate) fn detect(gpu: bool, device_index: u32) -> Box<dyn MemoryProbe> {
    if !gpu {
        log_host_fallback("GPU probing disabled");
        return Box::new(HostProbe::new());
    }
    match NvmlProbe::new(device_index) {
        Ok(probe) => {
            tracing::info!(device_index, "NVML available: model memory is GPU memory");
            Box::new(probe)
        }
        Err(e) => {
            log_host_fallback(&nvml_reason(&e, device_index));
            Box::new(HostProbe::new())
        }
    }
}

/// The memory budget: `percentage` (0–100, clamped; NaN counts as 0) of
/// `total` bytes, rounded down.
pub(crate) fn budget_bytes(total: u64, percentage: f64) -> u64 {
    if percentage.is_nan() || percentage <= 0.0 {
        return 0;
    }
    if percentage >= 100.0 {
        return total;
    }
    // total * p is exact for integer p while it stays below 2^53, so whole
    // percentages of whole numbers do not lose a byte to rounding.
    let bytes = (total as f64 * percentage / 100.0).floor();
    (bytes as u64).min(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeGpu {
        memory: Result<MemoryInfo, ()>,
        processes: Result<Vec<ProcessInfo>, ()>,
    }

    impl GpuDevice for FakeGpu {
        fn name(&self) -> Result<String, NvmlError> {
            Ok("Fake RTX 4090".to_string())
        }

        fn memory_info(&self) -> Result<MemoryInfo, NvmlError> {
            self.memory.clone().map_err(|()| NvmlError::GpuLost)
        }

        fn running_compute_processes(&self) -> Result<Vec<ProcessInfo>, NvmlError> {
            self.processes.clone().map_err(|()| NvmlError::NotSupported)
        }
    }

    const GIB: u64 = 1 << 30;

    fn memory() -> MemoryInfo {
        MemoryInfo { free: 10 * GIB, reserved: GIB / 2, total: 24 * GIB, used: 13 * GIB + GIB / 2, version: 0 }
    }

    fn process(pid: u32, used: UsedGpuMemory) -> ProcessInfo {
        ProcessInfo { pid, used_gpu_memory: used, gpu_instance_id: None, compute_instance_id: None }
    }

    #[test]
    fn gpu_reading_turns_device_answers_into_bytes() {
        let gpu = FakeGpu {
            memory: Ok(memory()),
            processes: Ok(vec![process(4242, UsedGpuMemory::Used(6 * GIB)), process(4343, UsedGpuMemory::Unavailable)]),
        };
        let r = gpu_reading(&gpu).unwrap();
        assert_eq!(r.source, MemorySource::Gpu);
        assert_eq!(r.device, "Fake RTX 4090");
        assert_eq!(r.total_bytes, 24 * GIB);
        assert_eq!(r.free_bytes, 10 * GIB);
        // Reserved memory counts as used: used + free == total.
        assert_eq!(r.used_bytes, 14 * GIB);
        assert_eq!(
            r.processes,
            vec![ProcessMemory { pid: 4242, used_bytes: Some(6 * GIB) }, ProcessMemory { pid: 4343, used_bytes: None }]
        );
    }

    #[test]
    fn gpu_reading_survives_a_process_list_error() {
        let gpu = FakeGpu { memory: Ok(memory()), processes: Err(()) };
        let r = gpu_reading(&gpu).unwrap();
        assert_eq!(r.total_bytes, 24 * GIB);
        assert_eq!(r.free_bytes, 10 * GIB);
        assert!(r.processes.is_empty());
    }

    #[test]
    fn gpu_reading_propagates_a_memory_info_error() {
        let gpu = FakeGpu { memory: Err(()), processes: Ok(vec![]) };
        let err = gpu_reading(&gpu).unwrap_err();
        assert!(matches!(err, ProbeError::Nvml(NvmlError::GpuLost)), "{err:?}");
        assert!(err.to_string().starts_with("nvml: "), "{err}");
    }

    #[test]
    fn host_probe_reads_consistent_numbers() {
        let probe = HostProbe::new();
        assert_eq!(probe.source(), MemorySource::Host);
        let r = probe.read().unwrap();
        assert_eq!(r.source, MemorySource::Host);
        assert_eq!(r.device, "host");
        assert!(r.total_bytes > 0);
        assert!(r.free_bytes <= r.total_bytes);
        assert_eq!(r.used_bytes + r.free_bytes, r.total_bytes);
        assert_eq!(r.processes.len(), 1);
        assert_eq!(r.processes[0].pid, std::process::id());
        assert!(r.processes[0].used_bytes.is_some_and(|b| b > 0 && b <= r.total_bytes));
        // A second read on the same System works too.
        assert!(probe.read().unwrap().total_bytes > 0);
    }

    #[test]
    fn detect_falls_back_to_host_without_nvml() {
        let nvml_here = Nvml::init().and_then(|n| n.device_by_index(0).map(|_| ())).is_ok();
        let probe = detect(true, 0);
        let expected = if nvml_here { MemorySource::Gpu } else { MemorySource::Host };
        assert_eq!(probe.source(), expected);
        let r = probe.read().unwrap();
        assert_eq!(r.source, expected);
        assert!(r.total_bytes > 0);
    }

    #[test]
    fn detect_without_gpu_is_host() {
        let probe = detect(false, 0);
        assert_eq!(probe.source(), MemorySource::Host);
        assert!(probe.read().unwrap().total_bytes > 0);
    }

    #[test]
    fn detect_with_a_missing_device_index_is_host() {
        // No machine has 4 billion GPUs: NVML (if present) rejects the index.
        assert_eq!(detect(true, u32::MAX).source(), MemorySource::Host);
    }

    #[test]
    fn budget_bytes_clamps_and_rounds_down() {
        assert_eq!(budget_bytes(1000, 50.0), 500);
        assert_eq!(budget_bytes(1000, 33.33), 333);
        assert_eq!(budget_bytes(999, 50.0), 499);
        assert_eq!(budget_bytes(100, 7.0), 7);
        assert_eq!(budget_bytes(24 * GIB, 90.0), 24 * GIB * 90 / 100);
        assert_eq!(budget_bytes(1000, 150.0), 1000);
        assert_eq!(budget_bytes(1000, f64::INFINITY), 1000);
        assert_eq!(budget_bytes(1000, -5.0), 0);
        assert_eq!(budget_bytes(1000, f64::NAN), 0);
        assert_eq!(budget_bytes(u64::MAX, 100.0), u64::MAX);
        assert!(budget_bytes(u64::MAX, 99.9) > u64::MAX / 1000 * 998);
        assert_eq!(budget_bytes(0, 80.0), 0);
    }

    #[test]
    fn source_names_match_serde() {
        assert_eq!(MemorySource::Gpu.as_str(), "gpu");
        assert_eq!(MemorySource::Host.as_str(), "host");
        assert_eq!(serde_json::to_string(&MemorySource::Gpu).unwrap(), "\"gpu\"");
        assert_eq!(serde_json::to_string(&MemorySource::Host).unwrap(), "\"host\"");
    }

    #[test]
    fn probes_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NvmlProbe>();
        assert_send_sync::<HostProbe>();
        assert_send_sync::<Box<dyn MemoryProbe>>();
    }
}
