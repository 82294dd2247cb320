//! The C ABI: the only `extern "C"` layer of dam. `include/dam.h` is
//! generated from this module by cbindgen (see `build.rs`, `include/ABI.md`);
//! the doc comments here are the header's documentation, and the contract
//! (ownership, threads, lifetimes, stability) is at the top of the header
//! (`include/cbindgen.toml`).
//!
//! Rules kept by every function here:
//! * every entry point runs inside `std::panic::catch_unwind`: a Rust panic
//!   becomes `DAM_STATUS_INTERNAL`, never an unwind into C;
//! * every pointer argument is checked for NULL before use; every caller
//!   struct is read through its `struct_size`; images are validated before a
//!   slice is made of them;
//! * every enum-valued *input* is a plain `int32_t`, decoded once by the
//!   enum's `TryFrom<i32>` (a C caller can pass any integer, which must not
//!   become an invalid Rust enum);
//! * nothing here decides engine behaviour: defaults come from the engine's
//!   `Default` impls, logging from `crate::log`, device info from
//!   `crate::info`; this layer only checks and translates.
//!
//! Files by topic: this one holds the shared plumbing (panics, statuses,
//! the last error, reading caller memory) and the version/info functions;
//! `types` the header's types; `model`, `session` and `input` (images,
//! regions, options) and `segmenter` the functions of each.
//!
//! The per-function safety contract is the header's (NULL-checked pointers
//! must otherwise be valid for the documented size, the documented threads
//! rule must be kept), hence the module-wide `missing_safety_doc` allowance.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

use crate::error::Error;

mod input;
mod model;
mod segmenter;
mod session;
mod types;

pub use input::*;
pub use model::*;
pub use segmenter::*;
pub use session::*;
pub use types::*;

// ------------------------------------------------------------------ versions

/// Major version of the C API. Changes only when an existing function,
/// struct field or enum value changes meaning or is removed (never so far).
pub const DAM_API_VERSION_MAJOR: u32 = 1;
/// Minor version of the C API. Grows when functions, struct fields (at the
/// end of a struct) or enum values are appended.
pub const DAM_API_VERSION_MINOR: u32 = 5;
/// The API version this header describes: `(MAJOR << 16) | MINOR`. Pass it
/// to `dam_model_load`.
pub const DAM_API_VERSION: u32 = (DAM_API_VERSION_MAJOR << 16) | DAM_API_VERSION_MINOR;

// ------------------------------------------------------------------ errors

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// An error on its way to the boundary: a status and a message.
pub(crate) struct Fail {
    status: DamStatus,
    msg: String,
}

pub(crate) fn fail(status: DamStatus, msg: impl Into<String>) -> Fail {
    Fail {
        status,
        msg: msg.into(),
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> Fail {
    fail(DamStatus::InvalidArgument, msg)
}

impl From<&Error> for DamStatus {
    fn from(e: &Error) -> DamStatus {
        match e {
            Error::InvalidArgument(_) => DamStatus::InvalidArgument,
            Error::InvalidRegion(_) => DamStatus::InvalidRegion,
            Error::UnsupportedRegion(_) => DamStatus::UnsupportedRegion,
            Error::InvalidModel(_) | Error::Convert(_) => DamStatus::InvalidModel,
            Error::Io(_) => DamStatus::Io,
            Error::ContextOverflow(_) => DamStatus::ContextOverflow,
            Error::Cancelled => DamStatus::Cancelled,
            Error::Backend(_) => DamStatus::Backend,
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        fail(DamStatus::from(&e), e.to_string())
    }
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut s) = slot.try_borrow_mut() {
            *s = c;
        }
    });
}

/// Runs one entry point: catches panics, records the error message.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Fail>) -> DamStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => DamStatus::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // Dropping a payload can itself panic; keep that inside too.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(&format!("internal error (a bug in dam): {what}"));
            DamStatus::Internal
        }
    }
}

/// As `guard` for functions without a status: `fallback` on a panic.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            fallback
        }
    }
}

/// As `guard_value` for the by-value default functions: on a panic (a bug)
/// the all-zero struct, whose `struct_size` of 0 every later call refuses.
pub(crate) fn guard_default<T: PlainData>(f: impl FnOnce() -> T) -> T {
    guard_value(T::zeroed(), f)
}

/// Decodes a C enum argument; `what` names it in the error.
pub(crate) fn enum_arg<T: TryFrom<i32, Error = NotAnEnumValue>>(
    value: i32,
    what: &str,
) -> Result<T, Fail> {
    T::try_from(value).map_err(|e| invalid(format!("{what} {e}")))
}

// ------------------------------------------------------------------ reading caller memory

/// Reads a caller's versioned struct (`struct_size` first): at least `min`
/// and at most `size_of::<T>()` bytes are copied over `defaults`.
///
/// # Safety
/// `p`, when not NULL, must point to at least `struct_size` readable bytes
/// (the struct_size field says how many).
pub(crate) unsafe fn read_versioned<T: PlainData>(
    p: *const T,
    defaults: T,
    min: usize,
    what: &str,
) -> Result<T, Fail> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: `p` is non-NULL and points to a struct starting with a u32
    // (caller's contract); read_unaligned has no alignment requirement.
    let size = unsafe { ptr::read_unaligned(p.cast::<u32>()) } as usize;
    check_struct_size(size, min, size_of::<T>(), what)?;
    let mut out = defaults;
    // SAFETY: the caller's struct has `size` readable bytes, `out` has
    // size_of::<T>() >= size writable bytes, they do not overlap, and any
    // bytes are a valid T (`PlainData`).
    unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), ptr::addr_of_mut!(out).cast::<u8>(), size) };
    Ok(out)
}

pub(crate) fn check_struct_size(
    size: usize,
    min: usize,
    max: usize,
    what: &str,
) -> Result<(), Fail> {
    if size < min {
        return Err(invalid(format!(
            "{what}: struct_size {size} is smaller than {min}: set it to sizeof the struct (or use its default function)"
        )));
    }
    if size > max {
        return Err(fail(
            DamStatus::VersionMismatch,
            format!(
                "{what}: struct_size {size} is larger than this library's {max}: the program was compiled against a newer dam.h"
            ),
        ));
    }
    Ok(())
}

/// Reads an optional versioned struct: `defaults` when `p` is NULL.
///
/// # Safety
/// As `read_versioned`.
pub(crate) unsafe fn read_optional<T: PlainData>(
    p: *const T,
    defaults: T,
    min: usize,
    what: &str,
) -> Result<T, Fail> {
    if p.is_null() {
        Ok(defaults)
    } else {
        // SAFETY: forwarded contract.
        unsafe { read_versioned(p, defaults, min, what) }
    }
}

/// A NUL-terminated string argument.
///
/// # Safety
/// `p`, when not NULL, must point to a NUL-terminated string.
pub(crate) unsafe fn cstr_arg<'a>(p: *const c_char, what: &str) -> Result<&'a CStr, Fail> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract; the
    // borrow ends with the call.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// A file path argument (any bytes on Unix, UTF-8 elsewhere).
///
/// # Safety
/// As `cstr_arg`.
pub(crate) unsafe fn path_arg(p: *const c_char, what: &str) -> Result<PathBuf, Fail> {
    // SAFETY: forwarded contract.
    let s = unsafe { cstr_arg(p, what) }?;
    if s.is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        s.to_str()
            .map(PathBuf::from)
            .map_err(|_| invalid(format!("{what} is not UTF-8")))
    }
}

/// Writes `text` and a NUL to a caller buffer with size-query semantics.
///
/// # Safety
/// `out`, when not NULL, must have `cap` writable bytes; `out_len`, when not
/// NULL, must be writable.
pub(crate) unsafe fn write_text(
    text: &str,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> Result<(), Fail> {
    let need = text.len() + 1;
    if !out_len.is_null() {
        // SAFETY: non-NULL and writable by contract.
        unsafe { out_len.write_unaligned(need) };
    }
    if out.is_null() || cap < need {
        return Err(fail(
            DamStatus::BufferTooSmall,
            format!(
                "the caption needs {need} bytes (NUL included), the buffer has {}; read it with dam_session_last_caption",
                if out.is_null() { 0 } else { cap }
            ),
        ));
    }
    // SAFETY: `out` has `cap >= need` writable bytes; `text` does not overlap
    // caller memory (it is ours).
    unsafe {
        ptr::copy_nonoverlapping(text.as_ptr(), out.cast::<u8>(), text.len());
        out.add(text.len()).write(0);
    }
    Ok(())
}

/// Clears the outputs of a describe call before it runs.
///
/// # Safety
/// As `write_text`.
pub(crate) unsafe fn clear_out(out: *mut c_char, cap: usize, out_len: *mut usize) {
    if !out_len.is_null() {
        // SAFETY: writable by contract.
        unsafe { out_len.write_unaligned(0) };
    }
    if !out.is_null() && cap > 0 {
        // SAFETY: at least one writable byte.
        unsafe { out.write(0) };
    }
}

// ------------------------------------------------------------------ version, info

/// The library's version, e.g. "0.1.0". Static string; never NULL. Any thread.
#[no_mangle]
pub extern "C" fn dam_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The C API version the library implements, `(MAJOR << 16) | MINOR`
/// (compare with `DAM_API_VERSION`). Any thread.
#[no_mangle]
pub extern "C" fn dam_api_version() -> u32 {
    DAM_API_VERSION
}

/// A short static name of a status, e.g. "DAM_STATUS_INVALID_REGION" ("unknown
/// status" for other values). Never NULL; valid for the whole process. Any
/// thread.
#[no_mangle]
pub extern "C" fn dam_status_string(status: i32) -> *const c_char {
    DamStatus::try_from(status)
        .map_or(c"unknown status", DamStatus::name)
        .as_ptr()
}

/// The message of the last failed call on the calling thread ("" if none).
/// Never NULL. Valid until the next failing dam call on this thread or the
/// thread's exit; successful calls leave it unchanged. Any thread (each has
/// its own).
#[no_mangle]
pub extern "C" fn dam_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), || {
        LAST_ERROR
            .try_with(|s| s.try_borrow().map(|s| s.as_ptr()).unwrap_or(c"".as_ptr()))
            .unwrap_or(c"".as_ptr())
    })
}

/// A JSON object describing the build and the machine: library and API
/// versions, compute backends/devices, default thread count, CPU SIMD
/// features, llama.cpp's system info. Built on the first call; the string is
/// static (valid for the whole process). Never NULL. Any thread.
#[no_mangle]
pub extern "C" fn dam_backend_info() -> *const c_char {
    static INFO: OnceLock<CString> = OnceLock::new();
    guard_value(c"{}".as_ptr(), || {
        INFO.get_or_init(|| {
            let json = serde_json::to_string(&crate::info::backend_info()).unwrap_or_default();
            CString::new(json.replace('\0', " ")).unwrap_or_default()
        })
        .as_ptr()
    })
}

// ------------------------------------------------------------------ shared checks

pub(crate) fn check_api_version(v: u32) -> Result<(), Fail> {
    let (major, minor) = (v >> 16, v & 0xffff);
    if major != DAM_API_VERSION_MAJOR || minor > DAM_API_VERSION_MINOR {
        return Err(fail(
            DamStatus::VersionMismatch,
            format!(
                "the program was compiled against dam.h {major}.{minor}, this library implements {DAM_API_VERSION_MAJOR}.{DAM_API_VERSION_MINOR} (same major and a minor at most the library's are needed)"
            ),
        ));
    }
    Ok(())
}

/// Thread counts above this are refused (as by the CLI).
const MAX_THREADS: usize = 512;

pub(crate) fn threads_of(n: i32) -> Result<usize, Fail> {
    usize::try_from(n)
        .ok()
        .filter(|&t| t <= MAX_THREADS)
        .ok_or_else(|| {
            invalid(format!(
                "params.n_threads {n} is out of range (0..={MAX_THREADS})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal() {
        let s = guard(|| panic!("boom"));
        assert_eq!(s, DamStatus::Internal);
        // SAFETY: dam_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(dam_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains("boom"), "{msg}");
        assert_eq!(guard_value(7, || -> i32 { panic!("x") }), 7);
    }

    #[test]
    fn versions() {
        assert!(check_api_version(DAM_API_VERSION).is_ok());
        assert!(check_api_version(DAM_API_VERSION + 1).is_err());
        assert!(check_api_version((DAM_API_VERSION_MAJOR + 1) << 16).is_err());
    }
}
