//! The C ABI: the only `extern "C"` layer of dam. `include/dam.h` is
//! generated from this file by cbindgen (see `build.rs`, `include/ABI.md`);
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
//! * every enum-valued *input* is a plain `int32_t` validated here (a C
//!   caller can pass any integer, which must not become an invalid Rust enum).
//!
//! The per-function safety contract is the header's (NULL-checked pointers
//! must otherwise be valid for the documented size, the documented threads
//! rule must be kept), hence the module-wide `missing_safety_doc` allowance.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr, CString};
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr;
use std::sync::{Arc, Mutex, Once, OnceLock, TryLockError};

use crate::error::Error;
use crate::image::{ImageView, PixelFormat, MAX_IMAGE_SIDE};
use crate::llm::prompt::LengthControl;
use crate::model::{
    CancelHandle, DescribeOptions, Frame, LoadStage, Model, ModelParams, Session, Timings,
    VisionDevice,
};
use crate::region::Region;
use crate::sys::llama::{self, FlashAttn, KvType, LogLevel, MAX_SEQUENCES};

// ------------------------------------------------------------------ versions

/// Major version of the C API. Changes only when an existing function,
/// struct field or enum value changes meaning or is removed (never so far).
pub const DAM_API_VERSION_MAJOR: u32 = 1;
/// Minor version of the C API. Grows when functions, struct fields (at the
/// end of a struct) or enum values are appended.
pub const DAM_API_VERSION_MINOR: u32 = 2;
/// The API version this header describes: `(MAJOR << 16) | MINOR`. Pass it
/// to `dam_model_load`.
pub const DAM_API_VERSION: u32 = (DAM_API_VERSION_MAJOR << 16) | DAM_API_VERSION_MINOR;

// ------------------------------------------------------------------ enums

/// The result of every fallible call: 0 on success, negative on error. The
/// message of the last error on the calling thread is `dam_last_error()`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamStatus {
    /// Success.
    Ok = 0,
    /// A NULL pointer, a wrong `struct_size`, an out-of-range option, a bad
    /// image (size, stride, format), a session used by two calls at once.
    InvalidArgument = -1,
    /// The region is empty, outside the image, of another size than the
    /// image, or malformed.
    InvalidRegion = -2,
    /// A region kind the engine cannot handle yet (`DAM_REGION_KIND_POINTS`).
    UnsupportedRegion = -3,
    /// A model file is malformed, truncated, or the two files do not match.
    InvalidModel = -4,
    /// A file cannot be opened or read.
    Io = -5,
    /// The prompt and the caption do not fit into the context window.
    ContextOverflow = -6,
    /// `dam_session_cancel()` was called, or a load-progress callback
    /// returned false.
    Cancelled = -7,
    /// ggml / llama.cpp failed (out of memory in a compute buffer, ...).
    Backend = -8,
    /// The caller was compiled against an incompatible `dam.h`.
    VersionMismatch = -9,
    /// The output buffer is NULL or too small; `*out_len` holds the size
    /// needed, terminating NUL included.
    BufferTooSmall = -10,
    /// A bug in dam (an internal panic was caught at the boundary).
    Internal = -11,
}

/// Pixel layouts of a `dam_image_view` (its `format` field).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamPixelFormat {
    /// R, G, B: 3 bytes per pixel.
    Rgb8 = 0,
    /// R, G, B, A: 4 bytes per pixel.
    Rgba8 = 1,
    /// B, G, R, A: 4 bytes per pixel (little-endian ARGB32 of UI toolkits).
    Bgra8 = 2,
    /// One byte of luminance per pixel.
    Gray8 = 3,
}

/// Kinds of `dam_region` (its `kind` field).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamRegionKind {
    /// `mask`: a view of the image's size; a pixel is in the region when its
    /// gray value, or any of its R, G, B values, is > 0.
    Mask = 0,
    /// The image's own alpha channel (alpha > 0); the image must be RGBA8 or
    /// BGRA8.
    Alpha = 1,
    /// The box `x0, y0, x1, y1`: every pixel whose centre lies in
    /// `[x0, x1) x [y0, y1)`; pixels, or fractions with `normalized`.
    Box = 2,
    /// The polyline through `points[0 .. n_points]` drawn with a round brush
    /// of diameter `brush_width` pixels; `normalized` applies to the points.
    Scribble = 3,
    /// Clicks `points` (labels in `point_labels`): needs a segmenter, which
    /// dam does not have yet; always `DAM_STATUS_UNSUPPORTED_REGION`.
    Points = 4,
}

/// Length instructions the model was trained with (`length_kind` of
/// `dam_describe_options`); `length_value` is N.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamLength {
    /// No length instruction.
    None = 0,
    /// " in N words".
    Words = 1,
    /// " in about N words".
    AboutWords = 2,
    /// " in more than N words".
    MoreThanWords = 3,
    /// " in N sentences".
    Sentences = 4,
}

/// KV-cache precision (`kv_type` of `dam_model_params`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamKvType {
    /// f16, like llama.cpp (default).
    F16 = 0,
    /// f32: bit-faithful comparisons with the reference.
    F32 = 1,
}

/// Flash-attention policy (`flash_attn` of `dam_model_params`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamFlashAttn {
    /// llama.cpp decides (default).
    Auto = 0,
    On = 1,
    Off = 2,
}

/// Where the vision stage runs (`vision_device` of `dam_device_params`).
/// Since API 1.2.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamVisionDevice {
    /// On the main GPU when ggml has one (weights uploaded once at load),
    /// else on the CPU (default).
    Gpu = 0,
    /// On the CPU, weights read in place from the mapping.
    Cpu = 1,
}

/// Severity of a log line.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DamLogLevel {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

/// Stages reported to the load-progress callback, in this order.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamLoadStage {
    /// Before anything is read (progress 0).
    Start = 0,
    /// The vision file is mapped and validated.
    VisionLoaded = 1,
    /// llama.cpp has loaded the LLM file.
    LlmLoaded = 2,
    /// The model is complete (progress 1).
    Done = 3,
}

// ------------------------------------------------------------------ callbacks

/// Receives each complete UTF-8 piece of a caption as it is generated:
/// `piece` is NUL-terminated and `len` bytes long (NUL excluded); it is valid
/// only during the call. Return true to go on, false to stop generation (the
/// call then succeeds with the caption so far). Called on the thread that
/// called `dam_describe*`. It must not throw, longjmp, or call `dam_describe*`
/// / `dam_session_last_caption` / `dam_session_timings` on the same session
/// (those return `DAM_STATUS_INVALID_ARGUMENT`); `dam_session_cancel` is fine.
pub type DamTokenCallback =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, user_data: *mut c_void) -> bool>;

/// As `dam_token_callback`, for `dam_describe_batch`: `region` is the index
/// of the region whose caption the piece belongs to. Returning false stops
/// that region's caption only. Same rules as `dam_token_callback`.
pub type DamBatchTokenCallback = Option<
    unsafe extern "C" fn(
        region: usize,
        piece: *const c_char,
        len: usize,
        user_data: *mut c_void,
    ) -> bool,
>;

/// Load progress: `stage`, `progress` in [0, 1]. Return false to abort the
/// load (`dam_model_load` then returns `DAM_STATUS_CANCELLED`). Called on the
/// thread that called `dam_model_load`; must not throw or longjmp.
pub type DamProgressCallback = Option<
    unsafe extern "C" fn(stage: DamLoadStage, progress: f32, user_data: *mut c_void) -> bool,
>;

/// One log line (`text`, NUL-terminated, usually ending in a newline, valid
/// only during the call). Called on the thread of the dam call that caused
/// the line (load, session creation, describe); when one model is used from
/// several threads it may be called concurrently. Must not throw or longjmp.
pub type DamLogCallback =
    Option<unsafe extern "C" fn(level: DamLogLevel, text: *const c_char, user_data: *mut c_void)>;

// ------------------------------------------------------------------ structs

/// How to load a model. Get one from `dam_model_default_params()` and
/// change fields; `struct_size` must stay `sizeof(dam_model_params)`.
/// Frozen at its 1.1 size (64 bytes on 64-bit targets): it is returned by
/// value, and a larger struct would be written past an older program's.
/// Later model settings go into `dam_device_params`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamModelParams {
    /// `sizeof(dam_model_params)` (set by `dam_model_default_params`).
    pub struct_size: u32,
    /// CPU threads for the vision graph and the LLM, 0 ..= 512; 0 = all cores.
    pub n_threads: i32,
    /// Context length in tokens; 0 = min(the LLM's training length, 4096).
    pub n_ctx: u32,
    /// A `dam_kv_type` (default `DAM_KV_TYPE_F16`).
    pub kv_type: i32,
    /// A `dam_flash_attn` (default `DAM_FLASH_ATTN_AUTO`).
    pub flash_attn: i32,
    /// LLM layers to offload to the GPU: negative = all (default since API
    /// 1.2; it was 0), 0 = none. Ignored without a GPU.
    pub n_gpu_layers: i32,
    /// Load progress (NULL = none).
    pub progress_callback: DamProgressCallback,
    pub progress_user_data: *mut c_void,
    /// Log lines of this model (NULL = quiet, the default).
    pub log_callback: DamLogCallback,
    pub log_user_data: *mut c_void,
    /// The least severe `dam_log_level` delivered (default `DAM_LOG_LEVEL_WARN`).
    pub log_level: i32,
    /// Regions `dam_describe_batch` decodes in parallel (LLM sequences
    /// sharing the `n_ctx` cells), 1 ..= 64; 0 = the default, 4.
    /// Since API 1.1.
    pub n_seq_max: u32,
}

/// Where a model runs, for `dam_model_load_on`. Fill it with
/// `dam_device_params_init` (it grows by appended fields; unlike
/// `dam_model_params` it is never returned by value). Since API 1.2.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamDeviceParams {
    /// `sizeof(dam_device_params)` (set by `dam_device_params_init`).
    pub struct_size: u32,
    /// The GPU to use: its index among the GPUs `dam_backend_info` lists
    /// (default 0). Ignored when there is no GPU.
    pub main_gpu: i32,
    /// A `dam_vision_device` (default `DAM_VISION_DEVICE_GPU`).
    pub vision_device: i32,
    /// 1 (default): copy the CPU's weight matrices that ggml multiplies
    /// faster in another layout (AMX tiles, repacked GEMM blocks) into it at
    /// load; 0: keep every weight in the mapped file (less memory).
    pub repack: i32,
}

/// How to create a session. Get one from `dam_session_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamSessionParams {
    /// `sizeof(dam_session_params)`.
    pub struct_size: u32,
    /// CPU threads of this session, 0 ..= 512; 0 = the model's `n_threads`.
    pub n_threads: i32,
}

/// What to generate. Get one from `dam_describe_options_default()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamDescribeOptions {
    /// `sizeof(dam_describe_options)`.
    pub struct_size: u32,
    /// Maximum new tokens (default 512, at least 1).
    pub max_new_tokens: u32,
    /// The question, UTF-8, without `<image>`; NULL = the model's default
    /// ("Describe the masked region in detail." for the released models).
    /// Copied during the call.
    pub query: *const c_char,
    /// A `dam_length` (default `DAM_LENGTH_NONE`).
    pub length_kind: i32,
    /// N of the length instruction (at least 1 when `length_kind` is set).
    pub length_value: u32,
    /// Sampling temperature; 0 = greedy (deterministic). Default 0.2.
    pub temperature: f32,
    /// Nucleus sampling, 0 < top_p <= 1. Default 0.5.
    pub top_p: f32,
    /// Top-k sampling (<= 0: off). Default 50.
    pub top_k: i32,
    /// Sampling seed. Default 0.
    pub seed: u32,
}

/// A borrowed image: `height` rows of `width` pixels; row `y` starts at byte
/// `y * stride_bytes` of `data`, and the last row needs only
/// `width * bytes_per_pixel` bytes. Read during the call only (copy-in).
/// This struct is frozen: it will never grow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamImageView {
    pub data: *const u8,
    /// 1 ..= 16384.
    pub width: u32,
    /// 1 ..= 16384.
    pub height: u32,
    /// Bytes from one row to the next, at least `width * bytes_per_pixel`.
    pub stride_bytes: usize,
    /// A `dam_pixel_format`.
    pub format: i32,
}

/// A point of a scribble or a click, in pixels (or fractions with
/// `normalized`). Frozen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DamPoint {
    pub x: f32,
    pub y: f32,
}

/// Which part of the image to describe. Zero it, set `struct_size` to
/// `sizeof(dam_region)` and `kind`, then the fields of that kind. Read
/// during the call only (copy-in).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamRegion {
    /// `sizeof(dam_region)`.
    pub struct_size: u32,
    /// A `dam_region_kind`.
    pub kind: i32,
    /// BOX, SCRIBBLE: nonzero = coordinates are fractions of width/height.
    pub normalized: i32,
    /// SCRIBBLE: brush diameter in image pixels (> 0).
    pub brush_width: f32,
    /// BOX: corners (x0 <= x1, y0 <= y1).
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    /// MASK: the mask, of the image's size, any pixel format.
    pub mask: DamImageView,
    /// SCRIBBLE, POINTS: `n_points` points.
    pub points: *const DamPoint,
    pub n_points: usize,
    /// POINTS: `n_points` labels (1 = positive, 0 = negative); NULL = all
    /// positive.
    pub point_labels: *const i32,
}

/// Timings of the last successful describe call of a session. Set
/// `struct_size` to `sizeof(dam_timings)` before calling
/// `dam_session_timings`; on return it holds the number of bytes filled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DamTimings {
    pub struct_size: u32,
    /// Input tokens of the prompt (visual tokens included).
    pub n_prompt_tokens: u32,
    /// Generated tokens.
    pub n_generated_tokens: u32,
    /// Region rasterisation, resizing, normalisation.
    pub preprocess_ms: f64,
    /// Vision encoder, context provider, projector.
    pub vision_ms: f64,
    /// LLM prompt prefill.
    pub prefill_ms: f64,
    /// Token-by-token generation.
    pub decode_ms: f64,
}

// The sizes of the 1.0 structs: a caller's `struct_size` may be larger (a
// newer header: rejected) or equal; appended fields will raise the current
// size while these minimums stay.
/// API 1.0's dam_model_params ended before `n_seq_max`.
const MODEL_PARAMS_MIN: usize = std::mem::offset_of!(DamModelParams, n_seq_max);
const DEVICE_PARAMS_MIN: usize = size_of::<DamDeviceParams>();
const SESSION_PARAMS_MIN: usize = size_of::<DamSessionParams>();
const OPTIONS_MIN: usize = size_of::<DamDescribeOptions>();
const REGION_MIN: usize = size_of::<DamRegion>();
const TIMINGS_MIN: usize = size_of::<DamTimings>();

/// Limits on caller counts, far above any real use, so that no count can make
/// a slice larger than the address space.
const MAX_POINTS: usize = 1 << 20;

// ------------------------------------------------------------------ opaque types

const MODEL_MAGIC: u64 = 0x6461_6d5f_6d6f_646c; // "dam_modl"
const SESSION_MAGIC: u64 = 0x6461_6d5f_7365_7373; // "dam_sess"

/// A loaded model: both GGUF files, memory-mapped and immutable. Shareable:
/// any number of threads may use one model at once.
pub struct DamModel {
    magic: u64,
    model: Arc<Model>,
    log: Option<Arc<LogSink>>,
}

/// The state of one conversation with a model: KV cache, compute buffers,
/// the last caption and timings. One thread at a time (except
/// `dam_session_cancel`).
pub struct DamSession {
    magic: u64,
    /// Outside the lock, so that `dam_session_cancel` never waits.
    cancel: CancelHandle,
    max_frames: usize,
    log: Option<Arc<LogSink>>,
    state: Mutex<SessionState>,
}

// The contract lets any thread use a model, and move a session between
// threads (one at a time) while others cancel it: check that the Rust types
// allow it.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<DamModel>();
    shareable::<DamSession>();
};

struct SessionState {
    session: Session,
    /// The captions of the last successful describe call: one, or one per
    /// region of a batch (empty before one, and after a failed one).
    captions: Vec<String>,
    timings: Timings,
}

// ------------------------------------------------------------------ errors

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// An error on its way to the boundary: a status and a message.
struct Fail {
    status: DamStatus,
    msg: String,
}

fn fail(status: DamStatus, msg: impl Into<String>) -> Fail {
    Fail {
        status,
        msg: msg.into(),
    }
}

fn invalid(msg: impl Into<String>) -> Fail {
    fail(DamStatus::InvalidArgument, msg)
}

fn status_of(e: &Error) -> DamStatus {
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

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        fail(status_of(&e), e.to_string())
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
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> DamStatus {
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
fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            fallback
        }
    }
}

// ------------------------------------------------------------------ logging

/// A model's log callback.
struct LogSink {
    cb: unsafe extern "C" fn(DamLogLevel, *const c_char, *mut c_void),
    user_data: *mut c_void,
    min_level: i32,
}

// SAFETY: the header's contract requires the log callback and its user data
// to be callable from any thread that calls into the model; the sink itself
// is immutable.
unsafe impl Send for LogSink {}
// SAFETY: as above (immutable; concurrent calls are allowed by contract).
unsafe impl Sync for LogSink {}

impl LogSink {
    fn emit(&self, level: DamLogLevel, text: &str) {
        if (level as i32) < self.min_level {
            return;
        }
        let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
        // SAFETY: `cb` is the caller's log callback (non-NULL by construction)
        // with its own user data; `c` outlives the call.
        unsafe { (self.cb)(level, c.as_ptr(), self.user_data) }
    }
}

thread_local! {
    /// The log sink of the model whose call runs on this thread.
    static CURRENT_LOG: RefCell<Option<Arc<LogSink>>> = const { RefCell::new(None) };
    /// The level of the last llama.cpp line on this thread (for continuations).
    static LAST_LEVEL: Cell<DamLogLevel> = const { Cell::new(DamLogLevel::Info) };
}

/// Routes llama.cpp's (process-global) log lines to the sink of the dam call
/// running on the same thread, for the duration of a call.
struct LogScope {
    prev: Option<Arc<LogSink>>,
}

impl LogScope {
    fn enter(sink: Option<Arc<LogSink>>) -> LogScope {
        let prev = CURRENT_LOG
            .try_with(|c| {
                c.try_borrow_mut()
                    .map(|mut c| std::mem::replace(&mut *c, sink))
            })
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        LogScope { prev }
    }
}

impl Drop for LogScope {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT_LOG.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = prev;
            }
        });
    }
}

fn current_sink() -> Option<Arc<LogSink>> {
    CURRENT_LOG
        .try_with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
        .ok()
        .flatten()
}

/// Installs dam's receiver of llama.cpp's log lines, once per process.
fn install_log_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        llama::set_log_hook(Some(Box::new(|level, text| {
            let level = match level {
                LogLevel::Debug => DamLogLevel::Debug,
                LogLevel::Info => DamLogLevel::Info,
                LogLevel::Warn => DamLogLevel::Warn,
                LogLevel::Error => DamLogLevel::Error,
                LogLevel::Cont => LAST_LEVEL.try_with(Cell::get).unwrap_or(DamLogLevel::Info),
            };
            let _ = LAST_LEVEL.try_with(|l| l.set(level));
            if let Some(sink) = current_sink() {
                sink.emit(level, text);
            }
        })));
    });
}

fn log(sink: &Option<Arc<LogSink>>, level: DamLogLevel, msg: &str) {
    if let Some(s) = sink {
        s.emit(level, &format!("dam: {msg}\n"));
    }
}

// ------------------------------------------------------------------ reading caller memory

/// Reads a caller's versioned struct (`struct_size` first): at least `min`
/// and at most `size_of::<T>()` bytes are copied over `defaults`.
///
/// # Safety
/// `p`, when not NULL, must point to at least `struct_size` readable bytes
/// (the struct_size field says how many). Every field type of `T` must be
/// valid for any bit pattern (integers, floats, raw pointers, optional
/// function pointers): this holds for the `Dam*` structs above.
unsafe fn read_versioned<T: Copy>(
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
    // bytes are a valid T (see above).
    unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), ptr::addr_of_mut!(out).cast::<u8>(), size) };
    Ok(out)
}

fn check_struct_size(size: usize, min: usize, max: usize, what: &str) -> Result<(), Fail> {
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
unsafe fn read_optional<T: Copy>(
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
unsafe fn cstr_arg<'a>(p: *const c_char, what: &str) -> Result<&'a CStr, Fail> {
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
unsafe fn path_arg(p: *const c_char, what: &str) -> Result<PathBuf, Fail> {
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

fn pixel_format(v: i32, what: &str) -> Result<PixelFormat, Fail> {
    match v {
        0 => Ok(PixelFormat::Rgb8),
        1 => Ok(PixelFormat::Rgba8),
        2 => Ok(PixelFormat::Bgra8),
        3 => Ok(PixelFormat::Gray8),
        _ => Err(invalid(format!(
            "{what}: format {v} is not a dam_pixel_format (0..=3)"
        ))),
    }
}

/// Validates an image view and borrows its bytes for the call.
///
/// # Safety
/// `v.data`, when not NULL, must point to `stride_bytes * (height - 1) +
/// width * bytes_per_pixel` readable bytes that stay unchanged during the
/// call (the header's rule for image views).
unsafe fn image_view<'a>(v: &DamImageView, what: &str) -> Result<ImageView<'a>, Fail> {
    let format = pixel_format(v.format, what)?;
    if v.data.is_null() {
        return Err(invalid(format!("{what}: data is NULL")));
    }
    for (side, name) in [(v.width, "width"), (v.height, "height")] {
        if side == 0 || side > MAX_IMAGE_SIDE {
            return Err(invalid(format!(
                "{what}: {name} {side} is out of range (1..={MAX_IMAGE_SIDE})"
            )));
        }
    }
    let bpp = format.bytes_per_pixel();
    let row = v.width as usize * bpp; // <= 16384 * 4: no overflow
    if v.stride_bytes < row {
        return Err(invalid(format!(
            "{what}: stride_bytes {} is smaller than one row ({} px x {bpp} bytes = {row})",
            v.stride_bytes, v.width
        )));
    }
    let need = v
        .stride_bytes
        .checked_mul(v.height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            invalid(format!(
                "{what}: stride_bytes {} is too large",
                v.stride_bytes
            ))
        })?;
    // SAFETY: `data` is non-NULL and, by the caller's contract, `need` bytes
    // are readable and unchanged during the call (the borrow ends with it);
    // `need <= isize::MAX` was checked.
    let bytes = unsafe { std::slice::from_raw_parts(v.data, need) };
    ImageView::new(bytes, v.width, v.height, v.stride_bytes, format)
        .map_err(|e| invalid(format!("{what}: {e}")))
}

/// Points of a region.
///
/// # Safety
/// `p`, when not NULL, must point to `n` readable `DamPoint`s.
unsafe fn points_of(p: *const DamPoint, n: usize, what: &str) -> Result<Vec<(f32, f32)>, Fail> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(invalid(format!(
            "{what}: points is NULL but n_points is {n}"
        )));
    }
    if n > MAX_POINTS {
        return Err(invalid(format!(
            "{what}: n_points {n} is above {MAX_POINTS}"
        )));
    }
    // SAFETY: non-NULL, `n` points readable by contract, n * 8 bytes far
    // below isize::MAX; unaligned reads avoid an alignment assumption.
    Ok((0..n)
        .map(|i| unsafe { ptr::read_unaligned(p.add(i)) })
        .map(|q| (q.x, q.y))
        .collect())
}

/// Converts a caller's region (already copied) into an engine region.
///
/// # Safety
/// The pointers inside `r` must satisfy the header's rules (mask view,
/// `n_points` points).
unsafe fn region_of<'a>(r: &DamRegion, what: &str) -> Result<Region<'a>, Fail> {
    let normalized = r.normalized != 0;
    Ok(match r.kind {
        0 => {
            // SAFETY: forwarded contract for the mask view.
            Region::Mask(unsafe { image_view(&r.mask, &format!("{what}.mask")) }?)
        }
        1 => Region::AlphaOfImage,
        2 => Region::Box {
            x0: r.x0,
            y0: r.y0,
            x1: r.x1,
            y1: r.y1,
            normalized,
        },
        3 => Region::Scribble {
            // SAFETY: forwarded contract for the points.
            points: unsafe { points_of(r.points, r.n_points, what) }?,
            width: r.brush_width,
            normalized,
        },
        4 => {
            return Err(fail(
                DamStatus::UnsupportedRegion,
                format!("{what}: points need a segmenter, which dam does not have yet; pass a mask, box or scribble"),
            ))
        }
        k => {
            return Err(invalid(format!(
                "{what}: kind {k} is not a dam_region_kind (0..=4)"
            )))
        }
    })
}

/// Reads region `k` of an array whose element size is `regions[0].struct_size`.
///
/// # Safety
/// `base`, when not NULL, must point to `n` regions of `stride` bytes each.
unsafe fn region_at<'a>(
    base: *const DamRegion,
    stride: usize,
    k: usize,
    what: &str,
) -> Result<Region<'a>, Fail> {
    // SAFETY: `k < n` and the array holds `n` elements of `stride` bytes
    // (caller's contract), so the offset stays inside it.
    let p = unsafe { base.cast::<u8>().add(k * stride) }.cast::<DamRegion>();
    // SAFETY: `p` points to a region of `stride` bytes (contract).
    let size = unsafe { ptr::read_unaligned(p.cast::<u32>()) } as usize;
    if size != stride {
        return Err(invalid(format!(
            "{what}: struct_size {size} differs from regions[0]'s {stride}"
        )));
    }
    // SAFETY: as above.
    let r = unsafe { read_versioned(p, zero_region(), REGION_MIN, what) }?;
    // SAFETY: the region's pointers follow the header's rules.
    unsafe { region_of(&r, what) }
}

fn zero_region() -> DamRegion {
    DamRegion {
        struct_size: size_of::<DamRegion>() as u32,
        kind: DamRegionKind::Mask as i32,
        normalized: 0,
        brush_width: 0.0,
        x0: 0.0,
        y0: 0.0,
        x1: 0.0,
        y1: 0.0,
        mask: DamImageView {
            data: ptr::null(),
            width: 0,
            height: 0,
            stride_bytes: 0,
            format: 0,
        },
        points: ptr::null(),
        n_points: 0,
        point_labels: ptr::null(),
    }
}

/// Converts caller options into engine options.
///
/// # Safety
/// `o.query`, when not NULL, must be a NUL-terminated string.
unsafe fn options_of(o: &DamDescribeOptions) -> Result<DescribeOptions, Fail> {
    let query = if o.query.is_null() {
        None
    } else {
        // SAFETY: forwarded contract.
        let q = unsafe { CStr::from_ptr(o.query) };
        Some(
            q.to_str()
                .map_err(|_| invalid("options.query is not valid UTF-8"))?
                .to_string(),
        )
    };
    let n = o.length_value;
    let length = match o.length_kind {
        0 => None,
        k @ 1..=4 => {
            if n == 0 {
                return Err(invalid("options.length_value must be at least 1"));
            }
            Some(match k {
                1 => LengthControl::Words(n),
                2 => LengthControl::AboutWords(n),
                3 => LengthControl::MoreThanWords(n),
                _ => LengthControl::Sentences(n),
            })
        }
        k => {
            return Err(invalid(format!(
                "options.length_kind {k} is not a dam_length (0..=4)"
            )))
        }
    };
    Ok(DescribeOptions {
        query,
        length,
        max_new_tokens: o.max_new_tokens as usize,
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        seed: o.seed,
    })
}

/// Writes `text` and a NUL to a caller buffer with size-query semantics.
///
/// # Safety
/// `out`, when not NULL, must have `cap` writable bytes; `out_len`, when not
/// NULL, must be writable.
unsafe fn write_text(
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
unsafe fn clear_out(out: *mut c_char, cap: usize, out_len: *mut usize) {
    if !out_len.is_null() {
        // SAFETY: writable by contract.
        unsafe { out_len.write_unaligned(0) };
    }
    if !out.is_null() && cap > 0 {
        // SAFETY: at least one writable byte.
        unsafe { out.write(0) };
    }
}

/// # Safety
/// `p`, when not NULL, must be a live `dam_model` from `dam_model_load`.
unsafe fn model_ref<'a>(p: *const DamModel) -> Result<&'a DamModel, Fail> {
    if p.is_null() {
        return Err(invalid("model is NULL"));
    }
    // SAFETY: non-NULL and, by contract, pointing to a live model; the tag
    // is read through the raw pointer (no reference is made) so that a
    // pointer to another kind of object is refused before it is used.
    if unsafe { ptr::addr_of!((*p).magic).read_unaligned() } != MODEL_MAGIC {
        return Err(invalid(
            "model is not a dam_model (freed, or another object)",
        ));
    }
    // SAFETY: a live model (tag checked); shared access only.
    Ok(unsafe { &*p })
}

/// # Safety
/// `p`, when not NULL, must be a live `dam_session` from `dam_session_new`.
unsafe fn session_ref<'a>(p: *const DamSession) -> Result<&'a DamSession, Fail> {
    if p.is_null() {
        return Err(invalid("session is NULL"));
    }
    // SAFETY: as in `model_ref`: the tag is read through the raw pointer.
    if unsafe { ptr::addr_of!((*p).magic).read_unaligned() } != SESSION_MAGIC {
        return Err(invalid(
            "session is not a dam_session (freed, or another object)",
        ));
    }
    // SAFETY: a live session (tag checked); only shared access is taken
    // (mutation goes through the Mutex / the atomic cancel flag).
    Ok(unsafe { &*p })
}

impl DamSession {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SessionState>, Fail> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(invalid(
                "the session is in use by another call (a session serves one thread at a time; create one per thread)",
            )),
            Err(TryLockError::Poisoned(_)) => Err(fail(
                DamStatus::Internal,
                "the session is unusable after an internal error; free it and create another",
            )),
        }
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
    let s: &'static CStr = match status {
        0 => c"DAM_STATUS_OK",
        -1 => c"DAM_STATUS_INVALID_ARGUMENT",
        -2 => c"DAM_STATUS_INVALID_REGION",
        -3 => c"DAM_STATUS_UNSUPPORTED_REGION",
        -4 => c"DAM_STATUS_INVALID_MODEL",
        -5 => c"DAM_STATUS_IO",
        -6 => c"DAM_STATUS_CONTEXT_OVERFLOW",
        -7 => c"DAM_STATUS_CANCELLED",
        -8 => c"DAM_STATUS_BACKEND",
        -9 => c"DAM_STATUS_VERSION_MISMATCH",
        -10 => c"DAM_STATUS_BUFFER_TOO_SMALL",
        -11 => c"DAM_STATUS_INTERNAL",
        _ => c"unknown status",
    };
    s.as_ptr()
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
    guard_value(c"{}".as_ptr(), || INFO.get_or_init(backend_info).as_ptr())
}

fn backend_info() -> CString {
    llama::init_backend();
    let devices: Vec<serde_json::Value> = crate::sys::ggml::devices()
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "name": d.name, "description": d.description, "type": d.kind,
                "memory_free": d.memory_free, "memory_total": d.memory_total,
            })
        })
        .collect();
    // SAFETY: both calls take no arguments; the string is static in llama.cpp.
    let (gpu, system) = unsafe {
        use crate::sys::ffi;
        let p = ffi::llama_print_system_info();
        let sys = if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().trim().to_string()
        };
        (ffi::llama_supports_gpu_offload(), sys)
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4);
    let j = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api_version": format!("{DAM_API_VERSION_MAJOR}.{DAM_API_VERSION_MINOR}"),
        "backends": devices,
        "gpu_offload": gpu,
        "threads": threads,
        "simd": crate::sys::ggml::cpu_features(),
        "system_info": system,
    });
    CString::new(j.to_string().replace('\0', " ")).unwrap_or_default()
}

// ------------------------------------------------------------------ defaults

fn model_params_default() -> DamModelParams {
    DamModelParams {
        struct_size: size_of::<DamModelParams>() as u32,
        n_threads: 0,
        n_ctx: 0,
        kv_type: DamKvType::F16 as i32,
        flash_attn: DamFlashAttn::Auto as i32,
        n_gpu_layers: ModelParams::default().n_gpu_layers,
        progress_callback: None,
        progress_user_data: ptr::null_mut(),
        log_callback: None,
        log_user_data: ptr::null_mut(),
        log_level: DamLogLevel::Warn as i32,
        n_seq_max: ModelParams::default().n_seq_max,
    }
}

fn session_params_default() -> DamSessionParams {
    DamSessionParams {
        struct_size: size_of::<DamSessionParams>() as u32,
        n_threads: 0,
    }
}

fn options_default() -> DamDescribeOptions {
    let d = DescribeOptions::default();
    DamDescribeOptions {
        struct_size: size_of::<DamDescribeOptions>() as u32,
        max_new_tokens: u32::try_from(d.max_new_tokens).unwrap_or(u32::MAX),
        query: ptr::null(),
        length_kind: DamLength::None as i32,
        length_value: 0,
        temperature: d.temperature,
        top_p: d.top_p,
        top_k: d.top_k,
        seed: d.seed,
    }
}

/// Default model parameters (all cores, f16 KV cache, no callbacks: quiet).
/// Any thread.
#[no_mangle]
pub extern "C" fn dam_model_default_params() -> DamModelParams {
    // The constructor cannot panic; the guard keeps the rule uniform.
    guard_value(model_params_default_fallback(), model_params_default)
}

fn model_params_default_fallback() -> DamModelParams {
    DamModelParams {
        struct_size: size_of::<DamModelParams>() as u32,
        n_threads: 0,
        n_ctx: 0,
        kv_type: 0,
        flash_attn: 0,
        n_gpu_layers: -1,
        progress_callback: None,
        progress_user_data: ptr::null_mut(),
        log_callback: None,
        log_user_data: ptr::null_mut(),
        log_level: 2,
        n_seq_max: 4,
    }
}

/// Default session parameters. Any thread.
#[no_mangle]
pub extern "C" fn dam_session_default_params() -> DamSessionParams {
    guard_value(
        DamSessionParams {
            struct_size: size_of::<DamSessionParams>() as u32,
            n_threads: 0,
        },
        session_params_default,
    )
}

/// Default describe options: the reference's sampling (temperature 0.2,
/// top-p 0.5, top-k 50, seed 0), 512 tokens, the model's query. Set
/// `temperature = 0` for greedy, deterministic captions. Any thread.
#[no_mangle]
pub extern "C" fn dam_describe_options_default() -> DamDescribeOptions {
    guard_value(
        DamDescribeOptions {
            struct_size: size_of::<DamDescribeOptions>() as u32,
            max_new_tokens: 512,
            query: ptr::null(),
            length_kind: 0,
            length_value: 0,
            temperature: 0.2,
            top_p: 0.5,
            top_k: 50,
            seed: 0,
        },
        options_default,
    )
}

// ------------------------------------------------------------------ model

fn check_api_version(v: u32) -> Result<(), Fail> {
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

fn threads_of(n: i32) -> Result<usize, Fail> {
    usize::try_from(n)
        .ok()
        .filter(|&t| t <= MAX_THREADS)
        .ok_or_else(|| {
            invalid(format!(
                "params.n_threads {n} is out of range (0..={MAX_THREADS})"
            ))
        })
}

fn device_params_default() -> DamDeviceParams {
    let d = ModelParams::default();
    DamDeviceParams {
        struct_size: size_of::<DamDeviceParams>() as u32,
        main_gpu: d.main_gpu,
        vision_device: match d.vision_device {
            VisionDevice::Gpu => DamVisionDevice::Gpu as i32,
            VisionDevice::Cpu => DamVisionDevice::Cpu as i32,
        },
        repack: i32::from(d.repack),
    }
}

/// Writes the default device parameters (main GPU 0, vision on the GPU)
/// into `*params`, `size` bytes of it: pass `sizeof(dam_device_params)`.
/// `DAM_STATUS_INVALID_ARGUMENT` for NULL or a `size` below the 1.2 struct,
/// `DAM_STATUS_VERSION_MISMATCH` for one above this library's. Any thread.
/// Since API 1.2.
#[no_mangle]
pub unsafe extern "C" fn dam_device_params_init(
    params: *mut DamDeviceParams,
    size: usize,
) -> DamStatus {
    guard(|| {
        if params.is_null() {
            return Err(invalid("params is NULL"));
        }
        check_struct_size(
            size,
            DEVICE_PARAMS_MIN,
            size_of::<DamDeviceParams>(),
            "params",
        )?;
        let mut d = device_params_default();
        d.struct_size = size as u32;
        // SAFETY: `params` is non-NULL and has `size` writable bytes by
        // contract; `d` has size_of::<DamDeviceParams>() >= size bytes.
        unsafe {
            ptr::copy_nonoverlapping(ptr::addr_of!(d).cast::<u8>(), params.cast::<u8>(), size)
        };
        Ok(())
    })
}

fn apply_device_params(p: &DamDeviceParams, mp: &mut ModelParams) -> Result<(), Fail> {
    mp.main_gpu = p.main_gpu;
    mp.vision_device = match p.vision_device {
        0 => VisionDevice::Gpu,
        1 => VisionDevice::Cpu,
        k => {
            return Err(invalid(format!(
                "device.vision_device {k} is not a dam_vision_device (0..=1)"
            )))
        }
    };
    mp.repack = match p.repack {
        0 => false,
        1 => true,
        k => return Err(invalid(format!("device.repack {k} is not 0 or 1"))),
    };
    if p.main_gpu < 0 {
        return Err(invalid(format!(
            "device.main_gpu {} is negative",
            p.main_gpu
        )));
    }
    Ok(())
}

fn model_params_of(p: &DamModelParams) -> Result<ModelParams, Fail> {
    let threads = threads_of(p.n_threads)?;
    let kv_type = match p.kv_type {
        0 => KvType::F16,
        1 => KvType::F32,
        k => {
            return Err(invalid(format!(
                "params.kv_type {k} is not a dam_kv_type (0..=1)"
            )))
        }
    };
    let flash_attn = match p.flash_attn {
        0 => FlashAttn::Auto,
        1 => FlashAttn::On,
        2 => FlashAttn::Off,
        k => {
            return Err(invalid(format!(
                "params.flash_attn {k} is not a dam_flash_attn (0..=2)"
            )))
        }
    };
    if !(0..=3).contains(&p.log_level) {
        return Err(invalid(format!(
            "params.log_level {} is not a dam_log_level (0..=3)",
            p.log_level
        )));
    }
    let n_seq_max = match p.n_seq_max {
        0 => ModelParams::default().n_seq_max,
        n if n <= MAX_SEQUENCES => n,
        n => {
            return Err(invalid(format!(
                "params.n_seq_max {n} is out of range (0..={MAX_SEQUENCES})"
            )))
        }
    };
    Ok(ModelParams {
        threads,
        n_ctx: p.n_ctx,
        kv_type,
        flash_attn,
        n_gpu_layers: p.n_gpu_layers,
        n_seq_max,
        ..ModelParams::default()
    })
}

/// Loads a model from its two GGUF files (`*-llm-*.gguf`, `*-vision-*.gguf`),
/// memory-mapped. Pass `DAM_API_VERSION` as `api_version`: a library that
/// cannot serve that header returns `DAM_STATUS_VERSION_MISMATCH`. `params`
/// may be NULL (defaults). On success `*out_model` is a new model owned by
/// the caller (free it with `dam_model_free`); on failure it is set to NULL
/// (when `out_model` is not NULL). Any thread; several loads may run at once.
#[no_mangle]
pub unsafe extern "C" fn dam_model_load(
    api_version: u32,
    llm_path: *const c_char,
    vision_path: *const c_char,
    params: *const DamModelParams,
    out_model: *mut *mut DamModel,
) -> DamStatus {
    // SAFETY: forwarded contract; no device parameters.
    unsafe {
        dam_model_load_on(
            api_version,
            llm_path,
            vision_path,
            params,
            ptr::null(),
            out_model,
        )
    }
}

/// `dam_model_load` with device choices: `device` may be NULL (the
/// defaults of `dam_device_params_init`). Without a GPU the model runs on
/// the CPU (an info log line says so); a `main_gpu` beyond the GPUs found
/// is `DAM_STATUS_INVALID_ARGUMENT`. Since API 1.2.
#[no_mangle]
pub unsafe extern "C" fn dam_model_load_on(
    api_version: u32,
    llm_path: *const c_char,
    vision_path: *const c_char,
    params: *const DamModelParams,
    device: *const DamDeviceParams,
    out_model: *mut *mut DamModel,
) -> DamStatus {
    guard(|| {
        if out_model.is_null() {
            return Err(invalid("out_model is NULL"));
        }
        // SAFETY: non-NULL and writable by contract.
        unsafe { out_model.write_unaligned(ptr::null_mut()) };
        check_api_version(api_version)?;
        // SAFETY: NUL-terminated strings or NULL, by contract.
        let llm = unsafe { path_arg(llm_path, "llm_path") }?;
        // SAFETY: as above.
        let vision = unsafe { path_arg(vision_path, "vision_path") }?;
        // SAFETY: `params` is NULL or a dam_model_params of struct_size bytes.
        let p =
            unsafe { read_optional(params, model_params_default(), MODEL_PARAMS_MIN, "params") }?;
        let mut mp = model_params_of(&p)?;
        // SAFETY: `device` is NULL or a dam_device_params of struct_size bytes.
        let d =
            unsafe { read_optional(device, device_params_default(), DEVICE_PARAMS_MIN, "device") }?;
        apply_device_params(&d, &mut mp)?;
        let sink = p.log_callback.map(|cb| {
            Arc::new(LogSink {
                cb,
                user_data: p.log_user_data,
                min_level: p.log_level,
            })
        });
        if sink.is_some() {
            install_log_hook();
        }
        let _scope = LogScope::enter(sink.clone());
        log(
            &sink,
            DamLogLevel::Info,
            &format!("loading {} and {}", llm.display(), vision.display()),
        );
        let mut cancelled_by_callback = false;
        let mut progress = |stage: LoadStage| -> bool {
            let Some(cb) = p.progress_callback else {
                return true;
            };
            let (s, f) = match stage {
                LoadStage::Start => (DamLoadStage::Start, 0.0),
                LoadStage::VisionLoaded => (DamLoadStage::VisionLoaded, 0.3),
                LoadStage::LlmLoaded => (DamLoadStage::LlmLoaded, 0.9),
                LoadStage::Done => (DamLoadStage::Done, 1.0),
            };
            // SAFETY: the caller's progress callback with its user data.
            let go_on = unsafe { cb(s, f, p.progress_user_data) };
            cancelled_by_callback |= !go_on;
            go_on
        };
        let model = match Model::load_with_progress(&llm, &vision, mp, &mut progress) {
            Ok(m) => m,
            Err(Error::Cancelled) if cancelled_by_callback => {
                return Err(fail(
                    DamStatus::Cancelled,
                    "model load cancelled by the progress callback",
                ))
            }
            Err(e) => {
                log(&sink, DamLogLevel::Error, &e.to_string());
                return Err(e.into());
            }
        };
        log(
            &sink,
            DamLogLevel::Info,
            &format!("model loaded in {:.0} ms", model.load_ms),
        );
        let boxed = Box::new(DamModel {
            magic: MODEL_MAGIC,
            model,
            log: sink,
        });
        // SAFETY: writable by contract (checked non-NULL above).
        unsafe { out_model.write_unaligned(Box::into_raw(boxed)) };
        Ok(())
    })
}

/// Frees a model; NULL is a no-op. Sessions created from it stay usable
/// (they keep the weights alive until they are freed). No other call may use
/// this `model` pointer concurrently or afterwards.
#[no_mangle]
pub unsafe extern "C" fn dam_model_free(model: *mut DamModel) {
    guard_value((), || {
        // SAFETY: NULL or a live model by contract.
        if unsafe { model_ref(model) }.is_err() {
            return;
        }
        // SAFETY: a live model from `Box::into_raw` in `dam_model_load`,
        // owned by the caller who gives it up here.
        let mut b = unsafe { Box::from_raw(model) };
        b.magic = 0;
        drop(b);
    })
}

/// The most frames `dam_describe_video` takes with this model (8 for the
/// released models); 0 when `model` is NULL. Any thread.
#[no_mangle]
pub unsafe extern "C" fn dam_model_max_frames(model: *const DamModel) -> u32 {
    guard_value(0, || {
        // SAFETY: NULL or a live model by contract.
        unsafe { model_ref(model) }
            .map(|m| u32::try_from(m.model.max_frames()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    })
}

// ------------------------------------------------------------------ session

/// Creates a session (KV cache, compute buffers) on `model`; `params` may be
/// NULL (defaults). On success `*out_session` is owned by the caller (free
/// it with `dam_session_free`); on failure it is NULL. Any thread, also
/// concurrently on the same model.
#[no_mangle]
pub unsafe extern "C" fn dam_session_new(
    model: *const DamModel,
    params: *const DamSessionParams,
    out_session: *mut *mut DamSession,
) -> DamStatus {
    guard(|| {
        if out_session.is_null() {
            return Err(invalid("out_session is NULL"));
        }
        // SAFETY: writable by contract.
        unsafe { out_session.write_unaligned(ptr::null_mut()) };
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { model_ref(model) }?;
        // SAFETY: NULL or a dam_session_params of struct_size bytes.
        let p = unsafe {
            read_optional(
                params,
                session_params_default(),
                SESSION_PARAMS_MIN,
                "params",
            )
        }?;
        let threads = threads_of(p.n_threads)?;
        let _scope = LogScope::enter(m.log.clone());
        let mut session = m.model.session()?;
        if threads > 0 {
            session.set_threads(threads)?;
        }
        let boxed = Box::new(DamSession {
            magic: SESSION_MAGIC,
            cancel: session.cancel_handle(),
            max_frames: m.model.max_frames(),
            log: m.log.clone(),
            state: Mutex::new(SessionState {
                session,
                captions: Vec::new(),
                timings: Timings::default(),
            }),
        });
        // SAFETY: writable by contract.
        unsafe { out_session.write_unaligned(Box::into_raw(boxed)) };
        Ok(())
    })
}

/// Frees a session; NULL is a no-op. No other call (`dam_session_cancel`
/// included) may use this pointer concurrently or afterwards.
#[no_mangle]
pub unsafe extern "C" fn dam_session_free(session: *mut DamSession) {
    guard_value((), || {
        // SAFETY: NULL or a live session by contract.
        if unsafe { session_ref(session) }.is_err() {
            return;
        }
        // SAFETY: a live session from `Box::into_raw` in `dam_session_new`,
        // given up by its owner here.
        let mut b = unsafe { Box::from_raw(session) };
        b.magic = 0;
        drop(b);
    })
}

/// Cancels the session's running describe call (it returns
/// `DAM_STATUS_CANCELLED` within one graph computation or one token), or,
/// when none runs, the next one. Any thread, at any time while the session
/// is alive (also from a token callback); never blocks.
#[no_mangle]
pub unsafe extern "C" fn dam_session_cancel(session: *const DamSession) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        s.cancel.cancel();
        Ok(())
    })
}

/// One describe call on already validated frames.
///
/// # Safety
/// Output pointers as in `write_text`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_describe(
    s: &DamSession,
    frames: &[Frame],
    video: bool,
    options: &DescribeOptions,
    on_token: DamTokenCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Result<(), Fail> {
    let _scope = LogScope::enter(s.log.clone());
    let mut st = s.lock()?;
    st.captions.clear();
    st.timings = Timings::default();
    let mut piece = Vec::new();
    let mut on_text = |t: &str| -> bool {
        let Some(cb) = on_token else {
            return true;
        };
        piece.clear();
        piece.extend_from_slice(t.as_bytes());
        piece.push(0);
        // SAFETY: the caller's token callback with its user data; `piece`
        // is NUL-terminated and outlives the call.
        unsafe { cb(piece.as_ptr().cast::<c_char>(), t.len(), user_data) }
    };
    let caption = if video {
        st.session.describe_video(frames, options, &mut on_text)
    } else {
        st.session
            .describe_stream(&frames[0].image, &frames[0].region, options, &mut on_text)
    };
    let caption = caption.inspect_err(|e| log(&s.log, DamLogLevel::Debug, &e.to_string()))?;
    for k in &caption.dropped_frames {
        log(
            &s.log,
            DamLogLevel::Warn,
            &format!("frame {k} dropped: its region is empty"),
        );
    }
    st.timings = caption.timings.clone();
    st.captions.push(caption.text);
    // SAFETY: forwarded contract.
    unsafe { write_text(&st.captions[0], out, out_cap, out_len) }
}

/// Describes `region` of `image`. `options` may be NULL (defaults);
/// `on_token` may be NULL. The caption (UTF-8, NUL-terminated) is written to
/// `out` when it fits in `out_cap` bytes; `*out_len` (when `out_len` is not
/// NULL) is set to its size including the NUL. When `out` is NULL or too
/// small the call still generates the caption, keeps it in the session and
/// returns `DAM_STATUS_BUFFER_TOO_SMALL`: fetch it with
/// `dam_session_last_caption` without generating again. Returning false from
/// `on_token` ends generation early with `DAM_STATUS_OK`. The session is used
/// by one thread at a time; a second concurrent call on the same session
/// returns `DAM_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn dam_describe(
    session: *mut DamSession,
    image: *const DamImageView,
    region: *const DamRegion,
    options: *const DamDescribeOptions,
    on_token: DamTokenCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { clear_out(out, out_cap, out_len) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        if image.is_null() {
            return Err(invalid("image is NULL"));
        }
        // SAFETY: non-NULL and a readable image view by contract (frozen
        // struct, any bit pattern valid); unaligned read.
        let view = unsafe { ptr::read_unaligned(image) };
        // SAFETY: the view's data follows the header's rules.
        let image = unsafe { image_view(&view, "image") }?;
        // SAFETY: NULL or a region of struct_size bytes.
        let r = unsafe { read_versioned(region, zero_region(), REGION_MIN, "region") }?;
        // SAFETY: the region's pointers follow the header's rules.
        let region = unsafe { region_of(&r, "region") }?;
        // SAFETY: NULL or options of struct_size bytes.
        let o = unsafe { read_optional(options, options_default(), OPTIONS_MIN, "options") }?;
        // SAFETY: `o.query` NULL or NUL-terminated by contract.
        let opts = unsafe { options_of(&o) }?;
        let frames = [Frame { image, region }];
        // SAFETY: output pointers NULL or writable by contract.
        unsafe {
            run_describe(
                s, &frames, false, &opts, on_token, user_data, out, out_cap, out_len,
            )
        }
    })
}

/// Describes the region followed through `n_frames` frames of a video
/// (`images[k]` with `regions[k]`; 1 <= n_frames <= `dam_model_max_frames`).
/// All regions must have the same `struct_size` (the array's element size
/// is `regions[0].struct_size`). Frames whose region is empty are dropped (a
/// warning is logged); if all are, `DAM_STATUS_INVALID_REGION`. Output,
/// callback and threading rules as `dam_describe`.
#[no_mangle]
pub unsafe extern "C" fn dam_describe_video(
    session: *mut DamSession,
    images: *const DamImageView,
    regions: *const DamRegion,
    n_frames: usize,
    options: *const DamDescribeOptions,
    on_token: DamTokenCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { clear_out(out, out_cap, out_len) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        let max = s.max_frames;
        if n_frames == 0 || n_frames > max {
            return Err(invalid(format!(
                "n_frames is {n_frames}; the model takes 1..={max} frames"
            )));
        }
        if images.is_null() {
            return Err(invalid("images is NULL"));
        }
        if regions.is_null() {
            return Err(invalid("regions is NULL"));
        }
        // SAFETY: `regions` non-NULL; its first element starts with a u32.
        let stride = unsafe { ptr::read_unaligned(regions.cast::<u32>()) } as usize;
        check_struct_size(stride, REGION_MIN, size_of::<DamRegion>(), "regions[0]")?;
        let mut frames = Vec::with_capacity(n_frames);
        for k in 0..n_frames {
            // SAFETY: `images` holds `n_frames` views (contract); k < n_frames.
            let view = unsafe { ptr::read_unaligned(images.add(k)) };
            let what = format!("images[{k}]");
            // SAFETY: the view's data follows the header's rules.
            let image = unsafe { image_view(&view, &what) }?;
            // SAFETY: `regions` holds `n_frames` elements of `stride` bytes.
            let region = unsafe { region_at(regions, stride, k, &format!("regions[{k}]")) }?;
            frames.push(Frame { image, region });
        }
        // SAFETY: NULL or options of struct_size bytes.
        let o = unsafe { read_optional(options, options_default(), OPTIONS_MIN, "options") }?;
        // SAFETY: `o.query` NULL or NUL-terminated by contract.
        let opts = unsafe { options_of(&o) }?;
        // SAFETY: output pointers NULL or writable by contract.
        unsafe {
            run_describe(
                s, &frames, true, &opts, on_token, user_data, out, out_cap, out_len,
            )
        }
    })
}

/// Describes `n_regions` regions of one image in one call (1 <= n_regions
/// <= 64): the vision stage runs batched and the captions decode in
/// parallel (up to the model's `n_seq_max` at once; more run in waves).
/// Each caption equals what `dam_describe` gives for that region alone.
/// All regions must have the same `struct_size` (the array's element size
/// is `regions[0].struct_size`); any invalid region fails the whole call
/// (the message names it). Read the captions with `dam_session_caption`
/// (index = region). `on_token` (may be NULL) receives each piece with its
/// region's index; returning false stops that region's caption only.
/// `dam_session_timings` then gives the whole call's times and token
/// counts. Threading rules as `dam_describe`. Since API 1.1.
#[no_mangle]
pub unsafe extern "C" fn dam_describe_batch(
    session: *mut DamSession,
    image: *const DamImageView,
    regions: *const DamRegion,
    n_regions: usize,
    options: *const DamDescribeOptions,
    on_token: DamBatchTokenCallback,
    user_data: *mut c_void,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        if n_regions == 0 || n_regions > crate::model::MAX_REGIONS {
            return Err(invalid(format!(
                "n_regions is {n_regions}; 1..={} regions per call",
                crate::model::MAX_REGIONS
            )));
        }
        if image.is_null() {
            return Err(invalid("image is NULL"));
        }
        if regions.is_null() {
            return Err(invalid("regions is NULL"));
        }
        // SAFETY: non-NULL and a readable image view by contract (frozen
        // struct, any bit pattern valid); unaligned read.
        let view = unsafe { ptr::read_unaligned(image) };
        // SAFETY: the view's data follows the header's rules.
        let image = unsafe { image_view(&view, "image") }?;
        // SAFETY: `regions` non-NULL; its first element starts with a u32.
        let stride = unsafe { ptr::read_unaligned(regions.cast::<u32>()) } as usize;
        check_struct_size(stride, REGION_MIN, size_of::<DamRegion>(), "regions[0]")?;
        let mut rs = Vec::with_capacity(n_regions);
        for k in 0..n_regions {
            // SAFETY: `regions` holds `n_regions` elements of `stride` bytes.
            rs.push(unsafe { region_at(regions, stride, k, &format!("regions[{k}]")) }?);
        }
        // SAFETY: NULL or options of struct_size bytes.
        let o = unsafe { read_optional(options, options_default(), OPTIONS_MIN, "options") }?;
        // SAFETY: `o.query` NULL or NUL-terminated by contract.
        let opts = unsafe { options_of(&o) }?;

        let _scope = LogScope::enter(s.log.clone());
        let mut st = s.lock()?;
        st.captions.clear();
        st.timings = Timings::default();
        let mut piece = Vec::new();
        let mut on_text = |k: usize, t: &str| -> bool {
            let Some(cb) = on_token else {
                return true;
            };
            piece.clear();
            piece.extend_from_slice(t.as_bytes());
            piece.push(0);
            // SAFETY: the caller's callback with its user data; `piece` is
            // NUL-terminated and outlives the call.
            unsafe { cb(k, piece.as_ptr().cast::<c_char>(), t.len(), user_data) }
        };
        let r = st
            .session
            .describe_many(&image, &rs, &opts, &mut on_text)
            .inspect_err(|e| log(&s.log, DamLogLevel::Debug, &e.to_string()))?;
        st.timings = r.timings;
        st.captions = r.captions.into_iter().map(|c| c.text).collect();
        Ok(())
    })
}

/// The number of captions the session's last successful describe call made
/// (1 for `dam_describe*`, `n_regions` for `dam_describe_batch`; 0 before
/// one, after a failed one, and for NULL). Same thread rule as
/// `dam_describe`. Since API 1.1.
#[no_mangle]
pub unsafe extern "C" fn dam_session_caption_count(session: *const DamSession) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or a live session by contract.
        let Ok(s) = (unsafe { session_ref(session) }) else {
            return 0;
        };
        s.lock().map_or(0, |st| st.captions.len())
    })
}

/// Copies caption `index` of the session's last successful describe call
/// (0 for `dam_describe*`; the region's index for `dam_describe_batch`) into
/// `out`, with the size-query rules of `dam_describe`. An index at or past
/// `dam_session_caption_count` is `DAM_STATUS_INVALID_ARGUMENT`. Same thread
/// rule as `dam_describe`. Since API 1.1.
#[no_mangle]
pub unsafe extern "C" fn dam_session_caption(
    session: *const DamSession,
    index: usize,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { clear_out(out, out_cap, out_len) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        let st = s.lock()?;
        let text = st.captions.get(index).ok_or_else(|| {
            invalid(format!(
                "caption {index} does not exist (the last call made {})",
                st.captions.len()
            ))
        })?;
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { write_text(text, out, out_cap, out_len) }
    })
}

/// Copies the caption of the session's last successful describe call into
/// `out` with the same size-query rules as `dam_describe` (`*out_len` =
/// size with the NUL; `DAM_STATUS_BUFFER_TOO_SMALL` when `out` is NULL or
/// too small). "" before any call and after a failed one. Same thread rule
/// as `dam_describe`.
#[no_mangle]
pub unsafe extern "C" fn dam_session_last_caption(
    session: *const DamSession,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        let st = s.lock()?;
        let text = st.captions.first().map_or("", String::as_str);
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { write_text(text, out, out_cap, out_len) }
    })
}

/// Fills `*out` with the timings of the session's last successful describe
/// call (zeros before one and after a failed one). Set `out->struct_size`
/// first. Same thread rule as `dam_describe`.
#[no_mangle]
pub unsafe extern "C" fn dam_session_timings(
    session: *const DamSession,
    out: *mut DamTimings,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: non-NULL; a dam_timings starts with its u32 struct_size.
        let size = unsafe { ptr::read_unaligned(out.cast::<u32>()) } as usize;
        check_struct_size(size, TIMINGS_MIN, usize::MAX, "out")?;
        let t = s.lock()?.timings.clone();
        let n = size.min(size_of::<DamTimings>());
        let v = DamTimings {
            struct_size: n as u32,
            n_prompt_tokens: u32::try_from(t.n_prompt_tokens).unwrap_or(u32::MAX),
            n_generated_tokens: u32::try_from(t.n_generated).unwrap_or(u32::MAX),
            preprocess_ms: t.preprocess_ms,
            vision_ms: t.vision_ms,
            prefill_ms: t.prefill_ms,
            decode_ms: t.decode_ms,
        };
        // SAFETY: the caller's struct has `size >= n` writable bytes; `v` is
        // ours and has `n <= size_of` readable bytes.
        unsafe { ptr::copy_nonoverlapping(ptr::addr_of!(v).cast::<u8>(), out.cast::<u8>(), n) };
        Ok(())
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
