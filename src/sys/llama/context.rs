//! A llama.cpp inference context: its parameters, creation, KV cache and
//! cancellation. Decoding is in `decode.rs`.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::backend::init_backend;
use super::ffi;
use super::logging::{take_last_error, with_detail};
use super::model::LlamaModel;
use crate::error::{Error, Result};

/// KV-cache element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum KvType {
    F32,
    F16,
    /// 8-bit blocks: about half an f16 cache. llama.cpp stores a quantized
    /// V cache only with flash attention, so it needs flash attention on
    /// (`Auto` means on).
    #[value(name = "q8_0")]
    Q8_0,
}

impl KvType {
    fn raw(self) -> ffi::ggml_type {
        match self {
            KvType::F32 => ffi::GGML_TYPE_F32,
            KvType::F16 => ffi::GGML_TYPE_F16,
            KvType::Q8_0 => ffi::GGML_TYPE_Q8_0,
        }
    }

    /// Whether llama.cpp needs flash attention for a V cache of this type.
    fn needs_flash_attn(self) -> bool {
        self == KvType::Q8_0
    }

    /// The flash-attention policy a V cache of this type runs with: `fa`,
    /// or on for a quantized cache (where `Auto` means on and an explicit
    /// `Off` is refused here, before llama.cpp fails on it).
    pub fn flash_attn_for(self, fa: FlashAttn) -> Result<FlashAttn> {
        match (self.needs_flash_attn(), fa) {
            (false, fa) => Ok(fa),
            (true, FlashAttn::Off) => Err(Error::InvalidArgument(
                "a q8_0 KV cache needs flash attention: flash_attn off cannot be used with it"
                    .into(),
            )),
            (true, _) => Ok(FlashAttn::On),
        }
    }

    /// Whether `model`'s heads fit a cache of this type: ggml stores a
    /// q8_0 row in blocks of 32, so the head width must be a multiple of it.
    pub fn check_model(self, model: &LlamaModel) -> Result<()> {
        let head = model.head_width();
        if self == KvType::Q8_0 && head % 32 != 0 {
            return Err(Error::InvalidArgument(format!(
                "a q8_0 KV cache needs the LLM's head width ({head}) to be a multiple of 32; use f16"
            )));
        }
        Ok(())
    }
}

/// Flash-attention policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum FlashAttn {
    /// llama.cpp decides (on where the backend supports it).
    Auto,
    On,
    Off,
}

impl FlashAttn {
    fn raw(self) -> ffi::llama_flash_attn_type {
        match self {
            FlashAttn::Auto => ffi::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::On => ffi::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => ffi::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }
    }
}

/// How to create a context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextParams {
    /// Context length in tokens (0 = the model's training length).
    /// llama.cpp may round it up; see [`LlamaContext::n_ctx`].
    pub n_ctx: u32,
    /// Most rows submitted to llama_decode at once (also the micro-batch).
    pub n_batch: u32,
    /// CPU threads for compute.
    pub n_threads: i32,
    pub type_k: KvType,
    pub type_v: KvType,
    pub flash_attn: FlashAttn,
    /// Sequences that can share the context at once (decoded together in
    /// one batch). The KV cache is unified: all sequences draw their cells
    /// from the same `n_ctx`.
    pub n_seq_max: u32,
    /// Let llama.cpp use a GPU for this context: the KV cache there and
    /// large CPU-weight products copied over (its `offload_kqv` and
    /// `op_offload`). Off keeps a CPU run entirely on the CPU even when a
    /// GPU is present.
    pub gpu_offload: bool,
}

impl Default for ContextParams {
    fn default() -> Self {
        let n_threads = crate::model::resolve_threads(0).unwrap_or(4);
        ContextParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: i32::try_from(n_threads).unwrap_or(4),
            type_k: KvType::F16,
            type_v: KvType::F16,
            flash_attn: FlashAttn::Auto,
            n_seq_max: 1,
            gpu_offload: true,
        }
    }
}

/// ggml's abort callback: true stops the graph compute.
///
/// # Safety
/// `data` is null or points at an `AtomicBool` that lives while the
/// callback is installed (see `install_abort`).
unsafe extern "C" fn abort_callback(data: *mut c_void) -> bool {
    if data.is_null() {
        return false;
    }
    // SAFETY: `data` is the address of an AtomicBool that the owning
    // LlamaContext keeps alive for as long as this callback is installed
    // (an `Arc` held in the struct, or a borrow scoped by
    // `with_abort_flag`); AtomicBool is Sync, so reading it from ggml's
    // worker threads is fine.
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.load(Ordering::Relaxed)
}

/// A llama.cpp inference context: KV cache, compute buffers, last logits.
/// It can move between threads but is used by one at a time.
pub struct LlamaContext {
    pub(super) ptr: NonNull<ffi::llama_context>,
    pub(super) model: Arc<LlamaModel>,
    pub(super) n_ctx: usize,
    pub(super) n_batch: usize,
    pub(super) n_seq_max: usize,
    /// Batch rows (as llama_get_logits_ith takes them; -1 = the last
    /// output) whose logits the last successful decode produced, in order.
    pub(super) out_rows: Vec<i32>,
    /// Keeps the installed abort flag alive.
    abort: Option<Arc<AtomicBool>>,
}

// SAFETY: a llama_context is not thread-safe but has no thread affinity;
// moving it to another thread is fine. It is not Sync (no `&self` sharing).
unsafe impl Send for LlamaContext {}

impl Drop for LlamaContext {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from llama_init_from_model and is freed once,
        // before `self.model` (the model it uses) is released.
        unsafe { ffi::llama_free(self.ptr.as_ptr()) };
    }
}

impl std::fmt::Debug for LlamaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaContext")
            .field("n_ctx", &self.n_ctx)
            .field("n_batch", &self.n_batch)
            .finish()
    }
}

/// Restores the context's own abort callback when a scoped flag ends.
struct AbortScope {
    ctx: *mut ffi::llama_context,
    restore: *const AtomicBool,
}

impl Drop for AbortScope {
    fn drop(&mut self) {
        install_abort(self.ctx, self.restore);
    }
}

fn install_abort(ctx: *mut ffi::llama_context, flag: *const AtomicBool) {
    let cb: ffi::ggml_abort_callback = if flag.is_null() {
        None
    } else {
        Some(abort_callback)
    };
    // SAFETY: `ctx` is a live context (callers pass their own pointer);
    // `flag` is null or points at an AtomicBool the caller keeps alive until
    // the callback is replaced (see `set_abort_flag` / `with_abort_flag`).
    unsafe { ffi::llama_set_abort_callback(ctx, cb, flag as *mut c_void) };
}

impl LlamaContext {
    /// Creates a context (with its KV cache) for `model`.
    pub fn new(model: &Arc<LlamaModel>, params: &ContextParams) -> Result<LlamaContext> {
        init_backend();
        if params.n_batch == 0 {
            return Err(Error::InvalidArgument("n_batch must be > 0".into()));
        }
        if params.n_threads < 1 {
            return Err(Error::InvalidArgument("n_threads must be >= 1".into()));
        }
        let n_ctx = if params.n_ctx == 0 {
            u32::try_from(model.n_ctx_train()).unwrap_or(0)
        } else {
            params.n_ctx
        };
        if n_ctx == 0 || n_ctx > (1 << 24) {
            return Err(Error::InvalidArgument(format!(
                "bad context length {n_ctx}"
            )));
        }
        let n_batch = params.n_batch.min(n_ctx);
        // SAFETY: returns a plain struct of defaults.
        let mut p = unsafe { ffi::llama_context_default_params() };
        p.n_ctx = n_ctx;
        p.n_batch = n_batch;
        p.n_ubatch = n_batch;
        if params.n_seq_max == 0 || params.n_seq_max > MAX_SEQUENCES {
            return Err(Error::InvalidArgument(format!(
                "{} sequences (1..={MAX_SEQUENCES} supported)",
                params.n_seq_max
            )));
        }
        // llama.cpp reserves one output row per sequence inside a batch
        // (and asserts it fits): a context never holds more sequences than
        // rows per batch. Fewer sequences only mean more waves.
        let n_seq_max = params.n_seq_max.min(n_batch);
        p.n_seq_max = n_seq_max;
        // One pool of cells for all sequences: a lone sequence gets the
        // whole context, as with n_seq_max = 1.
        p.kv_unified = true;
        p.n_threads = params.n_threads;
        p.n_threads_batch = params.n_threads;
        params.type_k.check_model(model)?;
        params.type_v.check_model(model)?;
        p.type_k = params.type_k.raw();
        p.type_v = params.type_v.raw();
        p.flash_attn_type = params.type_v.flash_attn_for(params.flash_attn)?.raw();
        p.offload_kqv = params.gpu_offload;
        p.op_offload = params.gpu_offload;
        p.embeddings = false;
        p.no_perf = true;
        take_last_error();
        // SAFETY: the model pointer is valid and outlives the context (we
        // keep an Arc); `p` is a fully initialised parameter struct.
        let raw = unsafe { ffi::llama_init_from_model(model.ptr.as_ptr(), p) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            Error::Backend(with_detail("llama.cpp cannot create a context".into()))
        })?;
        // SAFETY: valid context pointer; pure getters.
        let (real_ctx, real_batch) = unsafe {
            (
                ffi::llama_n_ctx(ptr.as_ptr()),
                ffi::llama_n_batch(ptr.as_ptr()),
            )
        };
        Ok(LlamaContext {
            ptr,
            model: Arc::clone(model),
            n_ctx: real_ctx as usize,
            n_batch: (real_batch as usize).clamp(1, n_batch as usize),
            n_seq_max: n_seq_max as usize,
            out_rows: Vec::new(),
            abort: None,
        })
    }

    /// The model this context runs.
    pub fn model(&self) -> &Arc<LlamaModel> {
        &self.model
    }

    /// Context length in tokens (positions 0..n_ctx-1 are usable).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Most rows per llama_decode call; longer inputs are split.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Sequences the context holds at once (ids 0..n_seq_max).
    pub fn n_seq_max(&self) -> usize {
        self.n_seq_max
    }

    /// Number of positions in the KV cache (next free position), from
    /// llama.cpp's memory.
    pub fn n_past(&self) -> usize {
        // SAFETY: valid context; the memory handle belongs to it and the
        // getter only reads.
        let p = unsafe {
            let mem = ffi::llama_get_memory(self.ptr.as_ptr());
            if mem.is_null() {
                return 0;
            }
            ffi::llama_memory_seq_pos_max(mem, 0)
        };
        usize::try_from(p.saturating_add(1)).unwrap_or(0)
    }

    /// Empties the KV cache.
    pub fn clear(&mut self) {
        // SAFETY: valid context; the memory handle belongs to it (null is
        // checked); clearing metadata and data is always allowed.
        unsafe {
            let mem = ffi::llama_get_memory(self.ptr.as_ptr());
            if !mem.is_null() {
                ffi::llama_memory_clear(mem, true);
            }
        }
        self.out_rows.clear();
    }

    /// Sets the number of compute threads.
    pub fn set_threads(&mut self, n: usize) -> Result<()> {
        let n = i32::try_from(n)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| Error::InvalidArgument(format!("bad thread count {n}")))?;
        // SAFETY: valid context, positive thread counts.
        unsafe { ffi::llama_set_n_threads(self.ptr.as_ptr(), n, n) };
        Ok(())
    }

    /// Installs `flag` as the abort flag: while it is true, llama_decode
    /// stops inside graph compute and returns [`Error::Cancelled`]. The
    /// context keeps the `Arc` alive. `None` removes it.
    pub fn set_abort_flag(&mut self, flag: Option<Arc<AtomicBool>>) {
        let p = flag.as_ref().map_or(std::ptr::null(), Arc::as_ptr);
        install_abort(self.ptr.as_ptr(), p);
        // Replace only after the new callback is in place.
        self.abort = flag;
    }

    /// Runs `f` with `flag` as the abort flag (instead of the one set by
    /// [`Self::set_abort_flag`], which is restored afterwards, also when `f`
    /// panics).
    pub fn with_abort_flag<R>(&mut self, flag: &AtomicBool, f: impl FnOnce(&mut Self) -> R) -> R {
        install_abort(self.ptr.as_ptr(), flag);
        let _scope = AbortScope {
            ctx: self.ptr.as_ptr(),
            restore: self.abort.as_ref().map_or(std::ptr::null(), Arc::as_ptr),
        };
        // `flag` outlives this call and `_scope` uninstalls it before we
        // return, so the callback never sees a dangling pointer.
        f(self)
    }
}

/// The most sequences a context may hold.
pub const MAX_SEQUENCES: u32 = 64;
