//! Process-wide initialisation of llama.cpp and ggml's backends, and what
//! they report about the machine.

use std::ffi::CStr;
use std::sync::Once;

use super::ffi;
use super::logging::log_callback;

static INIT: Once = Once::new();

/// Initialises llama.cpp's backends once per process and routes its logging
/// through [`set_log_hook`]. Every constructor here calls it; calling it
/// again is a no-op.
///
/// [`set_log_hook`]: super::set_log_hook
pub fn init_backend() {
    INIT.call_once(|| {
        // SAFETY: `log_callback` is a valid `extern "C"` function for the
        // whole program and never unwinds; no user data is used. Both calls
        // happen once, before any model exists (guarded by `INIT`).
        unsafe { ffi::llama_log_set(Some(log_callback), std::ptr::null_mut()) };
        // Before llama_backend_init, which loads every backend from ggml's
        // default places when none is registered yet.
        #[cfg(feature = "dynamic-backends")]
        load_backends();
        // SAFETY: see above.
        unsafe { ffi::llama_backend_init() };
    });
}

/// llama.cpp's one-line summary of the CPU features and backends it uses.
pub fn system_info() -> String {
    init_backend();
    // SAFETY: no arguments; the result is NULL or a NUL-terminated string
    // in llama.cpp's static storage, copied before returning.
    unsafe {
        let p = ffi::llama_print_system_info();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().trim().to_string()
        }
    }
}

/// Whether llama.cpp can offload layers to a GPU in this build/machine.
pub fn supports_gpu_offload() -> bool {
    init_backend();
    // SAFETY: a query without arguments or preconditions.
    unsafe { ffi::llama_supports_gpu_offload() }
}

/// Loads the ggml backend modules (CPU variants, CUDA, ...) from the first
/// folder that has a CPU backend: `DAM_BACKENDS_DIR`, the executable's
/// folder, then the folder the build installed them in. ggml picks the best
/// CPU variant the machine supports among the files there.
#[cfg(feature = "dynamic-backends")]
fn load_backends() {
    let has_cpu = |d: &std::path::Path| {
        std::fs::read_dir(d).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.contains("ggml-cpu")
                    && (n.ends_with(".so") || n.ends_with(".dll") || n.ends_with(".dylib"))
            })
        })
    };
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("DAM_BACKENDS_DIR") {
        dirs.push(d.into());
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|p| p.to_path_buf()))
    {
        dirs.push(d);
    }
    if let Some(d) = option_env!("DAM_BUILD_BACKENDS_DIR") {
        dirs.push(d.into());
    }
    // None found: llama_backend_init searches ggml's default places.
    let Some(dir) = dirs.into_iter().find(|d| has_cpu(d)) else {
        return;
    };
    let Some(c) = dir.to_str().and_then(|s| std::ffi::CString::new(s).ok()) else {
        return;
    };
    // SAFETY: a NUL-terminated path; ggml loads the modules it finds there
    // and registers them (once: we are inside `INIT`).
    unsafe { ffi::ggml_backend_load_all_from_path(c.as_ptr()) };
}
