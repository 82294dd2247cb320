//! The types of the header: enums, callbacks and caller structs, with their
//! conversions from C integers (each enum once, via `TryFrom<i32>`) and to
//! and from the engine's types.

use std::ffi::{c_char, c_void};
use std::mem::size_of;

use crate::llm::prompt::LengthControl;
use crate::log::LogLevel;
use crate::model::{LoadStage, VisionDevice};
use crate::sys::llama::{FlashAttn, KvType};
use crate::PixelFormat;

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
    /// Clicks `points` in image pixels (labels in `point_labels`), made a
    /// mask by the model's segmenter (`dam_device_params.segmenter_path`);
    /// without one `DAM_STATUS_UNSUPPORTED_REGION` (before 1.4 always).
    Points = 4,
    /// The box `x0, y0, x1, y1` in image pixels given to the segmenter,
    /// whose mask is the region (an opt-in alternative to BOX's filled
    /// rectangle); needs a segmenter like POINTS. Since API 1.4.
    SegmentedBox = 5,
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
    /// q8_0: about half the memory of f16; needs flash attention
    /// (`DAM_FLASH_ATTN_AUTO` means on, `DAM_FLASH_ATTN_OFF` is refused).
    /// Since API 1.5.
    Q8_0 = 2,
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
/// that region's caption only. Same rules as `dam_token_callback`. Since
/// API 1.1 (named `DamBatchTokenCallback` until 1.3).
pub type DamBatchTokenCallback = Option<
    unsafe extern "C" fn(
        region: usize,
        piece: *const c_char,
        len: usize,
        user_data: *mut c_void,
    ) -> bool,
>;

/// The 1.1 name of `dam_batch_token_callback`, kept so that programs
/// written against it still compile; prefer `dam_batch_token_callback`.
pub type DamBatchTokenCallbackV1_1 = DamBatchTokenCallback;

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

/// How to load a model. Get one from `dam_model_params_default()` and
/// change fields; `struct_size` must stay `sizeof(dam_model_params)`.
/// Frozen at its 1.1 size (64 bytes on 64-bit targets): it is returned by
/// value, and a larger struct would be written past an older program's.
/// Later model settings go into `dam_device_params`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DamModelParams {
    /// `sizeof(dam_model_params)` (set by `dam_model_params_default`).
    pub struct_size: u32,
    /// CPU threads for the vision graph and the LLM, 0 ..= 512; 0 = all cores.
    pub n_threads: i32,
    /// Context length in tokens; 0 = a session's context is made at its
    /// first call for what it needs (a multiple of 256; before 1.5, 1024 at
    /// `dam_session_new`) and grows to min(the LLM's training length, 4096)
    /// when a call needs more.
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
    /// A `dam-segmenter` GGUF file to load with the model (NULL = none,
    /// the default): POINTS and SEGMENTED_BOX regions become its masks
    /// (on the CPU, `n_threads` threads). Since API 1.4.
    pub segmenter_path: *const c_char,
}

/// How to create a session. Get one from `dam_session_params_default()`.
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
    /// BOX, SCRIBBLE: nonzero = coordinates are fractions of width/height
    /// (POINTS and SEGMENTED_BOX take pixels: nonzero is refused).
    pub normalized: i32,
    /// SCRIBBLE: brush diameter in image pixels (> 0).
    pub brush_width: f32,
    /// BOX, SEGMENTED_BOX: corners (x0 <= x1, y0 <= y1).
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    /// MASK: the mask, of the image's size, any pixel format.
    pub mask: DamImageView,
    /// SCRIBBLE, POINTS: `n_points` points.
    pub points: *const DamPoint,
    pub n_points: usize,
    /// POINTS: `n_points` labels (1 = positive, 0 = negative, anything
    /// else refused); NULL = all positive.
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
pub(crate) const MODEL_PARAMS_MIN: usize = std::mem::offset_of!(DamModelParams, n_seq_max);
pub(crate) const DEVICE_PARAMS_MIN: usize = std::mem::offset_of!(DamDeviceParams, segmenter_path);
pub(crate) const SESSION_PARAMS_MIN: usize = size_of::<DamSessionParams>();
pub(crate) const OPTIONS_MIN: usize = size_of::<DamDescribeOptions>();
pub(crate) const REGION_MIN: usize = size_of::<DamRegion>();
pub(crate) const TIMINGS_MIN: usize = size_of::<DamTimings>();

/// Caller structs that may be copied from (or zeroed into) raw bytes.
///
/// # Safety
/// Every field must be valid for any bit pattern, all zeros included:
/// integers, floats, raw pointers, optional function pointers, and other
/// `PlainData` structs.
pub(crate) unsafe trait PlainData: Copy {
    /// The all-zero value (NULL pointers, no callbacks, zero numbers).
    fn zeroed() -> Self {
        // SAFETY: any bit pattern, all zeros included, is a valid Self (the
        // trait's contract).
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: for each: integers, floats, raw pointers, `Option<extern fn>` and
// `DamImageView`/`DamPoint` fields only; no enums, references or bools.
unsafe impl PlainData for DamModelParams {}
// SAFETY: as above.
unsafe impl PlainData for DamDeviceParams {}
// SAFETY: as above.
unsafe impl PlainData for DamSessionParams {}
// SAFETY: as above.
unsafe impl PlainData for DamDescribeOptions {}
// SAFETY: as above.
unsafe impl PlainData for DamImageView {}
// SAFETY: as above.
unsafe impl PlainData for DamRegion {}
// SAFETY: as above.
unsafe impl PlainData for DamTimings {}

// ------------------------------------------------------------------ C integers to enums

/// A C integer that is none of a `dam_*` enum's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAnEnumValue {
    pub value: i32,
    /// The C name of the enum, e.g. "dam_kv_type".
    pub enum_name: &'static str,
    /// The lowest and highest values it has.
    pub range: (i32, i32),
}

impl std::fmt::Display for NotAnEnumValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo, hi) = self.range;
        write!(
            f,
            "{} is not a {} ({lo}..={hi})",
            self.value, self.enum_name
        )
    }
}

/// `TryFrom<i32>` for a `#[repr(i32)]` enum, from the list of its variants.
macro_rules! c_enum {
    ($t:ident, $name:literal, [$($v:ident),+ $(,)?]) => {
        impl TryFrom<i32> for $t {
            type Error = NotAnEnumValue;
            fn try_from(value: i32) -> Result<$t, NotAnEnumValue> {
                const ALL: &[$t] = &[$($t::$v),+];
                let found = ALL.iter().copied().find(|&v| v as i32 == value);
                found.ok_or_else(|| {
                    let values = ALL.iter().map(|&v| v as i32);
                    NotAnEnumValue {
                        value,
                        enum_name: $name,
                        range: (values.clone().min().unwrap_or(0), values.max().unwrap_or(0)),
                    }
                })
            }
        }
    };
}

c_enum!(
    DamStatus,
    "dam_status",
    [
        Ok,
        InvalidArgument,
        InvalidRegion,
        UnsupportedRegion,
        InvalidModel,
        Io,
        ContextOverflow,
        Cancelled,
        Backend,
        VersionMismatch,
        BufferTooSmall,
        Internal,
    ]
);
c_enum!(
    DamPixelFormat,
    "dam_pixel_format",
    [Rgb8, Rgba8, Bgra8, Gray8]
);
c_enum!(
    DamRegionKind,
    "dam_region_kind",
    [Mask, Alpha, Box, Scribble, Points, SegmentedBox]
);
c_enum!(
    DamLength,
    "dam_length",
    [None, Words, AboutWords, MoreThanWords, Sentences]
);
c_enum!(DamKvType, "dam_kv_type", [F16, F32, Q8_0]);
c_enum!(DamFlashAttn, "dam_flash_attn", [Auto, On, Off]);
c_enum!(DamVisionDevice, "dam_vision_device", [Gpu, Cpu]);
c_enum!(DamLogLevel, "dam_log_level", [Debug, Info, Warn, Error]);

// ------------------------------------------------------------------ engine types

impl DamStatus {
    /// The constant's name in the header.
    pub fn name(self) -> &'static std::ffi::CStr {
        match self {
            DamStatus::Ok => c"DAM_STATUS_OK",
            DamStatus::InvalidArgument => c"DAM_STATUS_INVALID_ARGUMENT",
            DamStatus::InvalidRegion => c"DAM_STATUS_INVALID_REGION",
            DamStatus::UnsupportedRegion => c"DAM_STATUS_UNSUPPORTED_REGION",
            DamStatus::InvalidModel => c"DAM_STATUS_INVALID_MODEL",
            DamStatus::Io => c"DAM_STATUS_IO",
            DamStatus::ContextOverflow => c"DAM_STATUS_CONTEXT_OVERFLOW",
            DamStatus::Cancelled => c"DAM_STATUS_CANCELLED",
            DamStatus::Backend => c"DAM_STATUS_BACKEND",
            DamStatus::VersionMismatch => c"DAM_STATUS_VERSION_MISMATCH",
            DamStatus::BufferTooSmall => c"DAM_STATUS_BUFFER_TOO_SMALL",
            DamStatus::Internal => c"DAM_STATUS_INTERNAL",
        }
    }
}

impl From<DamPixelFormat> for PixelFormat {
    fn from(f: DamPixelFormat) -> PixelFormat {
        match f {
            DamPixelFormat::Rgb8 => PixelFormat::Rgb8,
            DamPixelFormat::Rgba8 => PixelFormat::Rgba8,
            DamPixelFormat::Bgra8 => PixelFormat::Bgra8,
            DamPixelFormat::Gray8 => PixelFormat::Gray8,
        }
    }
}

impl DamLength {
    /// The engine's length instruction of this kind with N = `n`; `None`
    /// for `DAM_LENGTH_NONE`.
    pub fn with_value(self, n: u32) -> Option<LengthControl> {
        match self {
            DamLength::None => None,
            DamLength::Words => Some(LengthControl::Words(n)),
            DamLength::AboutWords => Some(LengthControl::AboutWords(n)),
            DamLength::MoreThanWords => Some(LengthControl::MoreThanWords(n)),
            DamLength::Sentences => Some(LengthControl::Sentences(n)),
        }
    }

    /// The kind and N of an engine length instruction.
    pub fn of(l: Option<LengthControl>) -> (DamLength, u32) {
        match l {
            None => (DamLength::None, 0),
            Some(LengthControl::Words(n)) => (DamLength::Words, n),
            Some(LengthControl::AboutWords(n)) => (DamLength::AboutWords, n),
            Some(LengthControl::MoreThanWords(n)) => (DamLength::MoreThanWords, n),
            Some(LengthControl::Sentences(n)) => (DamLength::Sentences, n),
        }
    }
}

/// `From` both ways between a C enum and an engine enum of the same variants.
macro_rules! same_enum {
    ($c:ident <=> $e:ident, [$($v:ident),+ $(,)?]) => {
        impl From<$c> for $e {
            fn from(v: $c) -> $e {
                match v { $($c::$v => $e::$v),+ }
            }
        }
        impl From<$e> for $c {
            fn from(v: $e) -> $c {
                match v { $($e::$v => $c::$v),+ }
            }
        }
    };
}

same_enum!(DamKvType <=> KvType, [F16, F32, Q8_0]);
same_enum!(DamFlashAttn <=> FlashAttn, [Auto, On, Off]);
same_enum!(DamVisionDevice <=> VisionDevice, [Gpu, Cpu]);
same_enum!(DamLogLevel <=> LogLevel, [Debug, Info, Warn, Error]);

impl DamLoadStage {
    /// The stage of an engine load stage, with the fraction of the load
    /// done when it is reached.
    pub fn of(stage: LoadStage) -> (DamLoadStage, f32) {
        match stage {
            LoadStage::Start => (DamLoadStage::Start, 0.0),
            LoadStage::VisionLoaded => (DamLoadStage::VisionLoaded, 0.3),
            LoadStage::LlmLoaded => (DamLoadStage::LlmLoaded, 0.9),
            LoadStage::Done => (DamLoadStage::Done, 1.0),
        }
    }
}
