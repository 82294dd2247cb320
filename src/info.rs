//! What this build of dam can run on: versions, compute devices, CPU
//! features. One description for the CLI (`dam info`) and the C API
//! (`dam_backend_info`, its JSON).

use serde::Serialize;

use crate::capi::{DAM_API_VERSION_MAJOR, DAM_API_VERSION_MINOR};
use crate::sys::{ggml, llama};

/// The build and the machine. Serialises to the JSON of `dam_backend_info`
/// (fields in alphabetical order, as that JSON has always had them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendInfo {
    /// The C API version, "MAJOR.MINOR".
    pub api_version: String,
    /// Every compute device ggml knows.
    pub backends: Vec<Device>,
    /// Whether llama.cpp can offload LLM layers to a GPU.
    pub gpu_offload: bool,
    /// The CPU's SIMD features ggml uses.
    pub simd: Vec<String>,
    /// llama.cpp's system summary.
    pub system_info: String,
    /// Hardware threads available to the process.
    pub threads: usize,
    /// The library's version.
    pub version: &'static str,
}

/// One compute device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    pub description: String,
    pub memory_free: usize,
    pub memory_total: usize,
    pub name: String,
    /// "cpu", "gpu", "igpu" or "accel".
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Describes the build and the machine (queries ggml's device registry).
pub fn backend_info() -> BackendInfo {
    let backends = ggml::devices()
        .into_iter()
        .map(|d| Device {
            description: d.description,
            memory_free: d.memory_free,
            memory_total: d.memory_total,
            name: d.name,
            kind: d.kind,
        })
        .collect();
    BackendInfo {
        api_version: format!("{DAM_API_VERSION_MAJOR}.{DAM_API_VERSION_MINOR}"),
        backends,
        gpu_offload: llama::supports_gpu_offload(),
        simd: ggml::cpu_features(),
        system_info: llama::system_info(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4),
        version: env!("CARGO_PKG_VERSION"),
    }
}
