//! llama.cpp's and ggml's log lines, routed to one Rust receiver; the last
//! error line is kept to explain C failures.

use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, RwLock};

use super::ffi;

/// Severity of a llama.cpp / ggml log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    /// Continuation of the previous line (ggml's `GGML_LOG_LEVEL_CONT`).
    Cont,
}

impl LogLevel {
    fn from_raw(level: ffi::ggml_log_level) -> LogLevel {
        match level {
            ffi::GGML_LOG_LEVEL_DEBUG => LogLevel::Debug,
            ffi::GGML_LOG_LEVEL_WARN => LogLevel::Warn,
            ffi::GGML_LOG_LEVEL_ERROR => LogLevel::Error,
            ffi::GGML_LOG_LEVEL_CONT => LogLevel::Cont,
            _ => LogLevel::Info,
        }
    }
}

/// A Rust receiver for llama.cpp's log lines (text includes its newline).
pub type LogHook = Box<dyn Fn(LogLevel, &str) + Send + Sync>;

static LOG_HOOK: RwLock<Option<LogHook>> = RwLock::new(None);
/// The last error-level line llama.cpp logged; appended to error messages.
static LAST_ERROR: Mutex<String> = Mutex::new(String::new());

/// Installs (or with `None` removes) the receiver of llama.cpp's log lines.
/// Without a hook llama.cpp is silent. May be called at any time.
pub fn set_log_hook(hook: Option<LogHook>) {
    let mut slot = LOG_HOOK.write().unwrap_or_else(|e| e.into_inner());
    *slot = hook;
}

/// llama.cpp's and ggml's log callback (installed by `init_backend`).
///
/// # Safety
/// `text` is null or a NUL-terminated string valid for the call.
pub(super) unsafe extern "C" fn log_callback(
    level: ffi::ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated string that lives for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let level = LogLevel::from_raw(level);
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if level == LogLevel::Error {
            if let Ok(mut last) = LAST_ERROR.lock() {
                last.clear();
                last.push_str(text.trim_end());
            }
        }
        if let Ok(hook) = LOG_HOOK.read() {
            if let Some(hook) = hook.as_ref() {
                hook(level, &text);
            }
        }
    }));
}

/// Sends one of dam's own lines (with its newline) to the receiver of
/// llama.cpp's lines, so callers see both in one stream.
pub fn log(level: LogLevel, text: &str) {
    if let Ok(hook) = LOG_HOOK.read() {
        if let Some(hook) = hook.as_ref() {
            hook(level, text);
        }
    }
}

/// Takes the last error line llama.cpp logged (empty if none).
pub(super) fn take_last_error() -> String {
    match LAST_ERROR.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => String::new(),
    }
}

pub(super) fn with_detail(msg: String) -> String {
    let detail = take_last_error();
    if detail.is_empty() {
        msg
    } else {
        format!("{msg} ({detail})")
    }
}
