//! A thin safe wrapper over llama.cpp's C API: backend init and logging,
//! models (weights + SentencePiece vocabulary), contexts (KV cache, decode of
//! token ids or of embedding rows, logits), cancellation and samplers.
//!
//! Nothing here re-implements llama.cpp: tokenisation, the KV cache and the
//! samplers are llama.cpp's own. Every argument is validated before it
//! reaches C, so that no caller input can trip a `GGML_ASSERT` (which would
//! abort the process); every C failure becomes an [`Error`].

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, RwLock};

use super::types::{dequantize, GgmlType};
use super::{ffi, MappedFile};
use crate::error::{Error, Result};
use crate::gguf_file::{GgufHeader, TensorInfo};

// ---------------------------------------------------------------- backend, logging

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
static INIT: Once = Once::new();

/// Installs (or with `None` removes) the receiver of llama.cpp's log lines.
/// Without a hook llama.cpp is silent. May be called at any time.
pub fn set_log_hook(hook: Option<LogHook>) {
    let mut slot = LOG_HOOK.write().unwrap_or_else(|e| e.into_inner());
    *slot = hook;
}

unsafe extern "C" fn log_callback(
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

/// Initialises llama.cpp's backends once per process and routes its logging
/// through [`set_log_hook`]. Every constructor here calls it; calling it
/// again is a no-op.
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

/// Takes the last error line llama.cpp logged (empty if none).
fn take_last_error() -> String {
    match LAST_ERROR.lock() {
        Ok(mut s) => std::mem::take(&mut *s),
        Err(_) => String::new(),
    }
}

fn with_detail(msg: String) -> String {
    let detail = take_last_error();
    if detail.is_empty() {
        msg
    } else {
        format!("{msg} ({detail})")
    }
}

/// Renders a C `int32` capacity request for a buffer of `n` elements.
fn c_len(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{what} too long ({n})")))
}

// ---------------------------------------------------------------- model

/// How to load a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelParams {
    /// Layers to offload to a GPU (0 = none, negative = all). Ignored by
    /// CPU-only builds.
    pub n_gpu_layers: i32,
    /// The GPU (index among ggml's GPUs) that holds the offloaded layers;
    /// the model is not split across GPUs.
    pub main_gpu: i32,
    /// Let llama.cpp copy weights into the CPU's extra buffer types (AMX,
    /// repacked layouts).
    pub use_extra_bufts: bool,
    /// Memory-map the file instead of reading it.
    pub use_mmap: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            n_gpu_layers: 0,
            main_gpu: 0,
            use_extra_bufts: true,
            use_mmap: true,
        }
    }
}

/// A loaded llama.cpp model (weights and vocabulary). Read-only after
/// loading, so it can be shared between threads and contexts.
pub struct LlamaModel {
    ptr: NonNull<ffi::llama_model>,
    vocab: NonNull<ffi::llama_vocab>,
    n_vocab: usize,
    n_embd: usize,
    tokens: TokenTable,
}

/// The token embedding table (`token_embd.weight`) read from the mapped
/// GGUF file. llama.cpp keeps it private, but a prompt that mixes text and
/// image rows can only go into one llama_decode as embedding rows.
pub struct TokenTable {
    file: MappedFile,
    /// Byte offset of row 0 in the file.
    offset: usize,
    row_bytes: usize,
    ty: GgmlType,
    /// ggml shape [n_embd, n_vocab].
    ne: Vec<u64>,
}

impl TokenTable {
    /// The table `t` of a mapped file whose header (`t` from it) has been
    /// parsed, so that offset + size lie in the file.
    pub fn new(file: MappedFile, t: &TensorInfo) -> Result<TokenTable> {
        let row_bytes =
            t.ne.first()
                .and_then(|&n| t.ty.row_size(n))
                .ok_or_else(|| Error::InvalidModel(format!("{} has a bad row size", t.name)))?;
        Ok(TokenTable {
            offset: t.offset as usize,
            row_bytes: row_bytes as usize,
            ty: t.ty,
            ne: t.ne.clone(),
            file,
        })
    }

    /// Maps and parses `path` and finds the table.
    fn open(path: &Path) -> Result<TokenTable> {
        let file = MappedFile::open(path)?;
        let what = path.display().to_string();
        let h = GgufHeader::parse(file.bytes(), &what)?;
        let t = h
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::InvalidModel(format!("{what}: no token_embd.weight tensor")))?;
        Self::new(file, t).map_err(|e| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{what}: {m}")),
            e => e,
        })
    }

    /// The table must be `n_embd` x `n_vocab` (llama.cpp's sizes).
    fn check(self, what: &Path, n_embd: usize, n_vocab: usize) -> Result<TokenTable> {
        if n_vocab == 0 || n_embd == 0 {
            return Err(Error::InvalidModel(format!(
                "{}: model has no vocabulary or zero width",
                what.display()
            )));
        }
        if self.ne != [n_embd as u64, n_vocab as u64] {
            return Err(Error::InvalidModel(format!(
                "{}: token_embd.weight is {:?}, not [{n_embd}, {n_vocab}]",
                what.display(),
                self.ne
            )));
        }
        Ok(self)
    }

    /// Row `id` as f32 (ggml's `to_float`, the values llama.cpp's
    /// `get_rows` gives); `id` must be in range.
    fn row(&self, id: usize, n_embd: usize) -> Result<Vec<f32>> {
        let start = self.offset + id * self.row_bytes;
        dequantize(
            self.ty,
            &self.file.bytes()[start..start + self.row_bytes],
            n_embd,
        )
    }
}

// SAFETY: llama.cpp never mutates a llama_model after loading (contexts hold
// their own state), and its vocabulary functions (tokenize, token_to_piece,
// attributes) are documented as thread-safe; so the model may be used from
// and sent to any thread.
unsafe impl Send for LlamaModel {}
// SAFETY: see above: every method takes `&self` and reads immutable data.
unsafe impl Sync for LlamaModel {}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from llama_model_load_from_file and is freed
        // exactly once; contexts keep an `Arc<LlamaModel>`, so none outlives it.
        unsafe { ffi::llama_model_free(self.ptr.as_ptr()) };
    }
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("n_vocab", &self.n_vocab)
            .field("n_embd", &self.n_embd)
            .finish()
    }
}

impl LlamaModel {
    /// Loads a GGUF model file.
    pub fn load(path: &Path, params: &ModelParams) -> Result<LlamaModel> {
        Self::load_with_table(path, params, None)
    }

    /// As [`LlamaModel::load`], with the token embedding table of the same
    /// file when the caller has already mapped and parsed it.
    pub fn load_with_table(
        path: &Path,
        params: &ModelParams,
        table: Option<TokenTable>,
    ) -> Result<LlamaModel> {
        init_backend();
        if !path.is_file() {
            return Err(Error::Io(format!("{}: no such file", path.display())));
        }
        let s = path.to_str().ok_or_else(|| {
            Error::InvalidArgument(format!("model path is not UTF-8: {}", path.display()))
        })?;
        let cpath = CString::new(s)
            .map_err(|_| Error::InvalidArgument(format!("model path has a NUL byte: {s:?}")))?;
        // SAFETY: returns a plain struct of defaults.
        let mut p = unsafe { ffi::llama_model_default_params() };
        p.n_gpu_layers = params.n_gpu_layers;
        p.main_gpu = params.main_gpu;
        p.split_mode = ffi::LLAMA_SPLIT_MODE_NONE;
        p.use_extra_bufts = params.use_extra_bufts;
        p.load_mode = if params.use_mmap {
            ffi::LLAMA_LOAD_MODE_MMAP
        } else {
            ffi::LLAMA_LOAD_MODE_NONE
        };
        take_last_error();
        // SAFETY: `cpath` is a valid NUL-terminated string for the duration
        // of the call; `p` is a fully initialised parameter struct (defaults
        // plus two plain fields). A null result is handled below.
        let raw = unsafe { ffi::llama_model_load_from_file(cpath.as_ptr(), p) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            Error::InvalidModel(with_detail(format!(
                "llama.cpp cannot load {}",
                path.display()
            )))
        })?;
        // SAFETY: `ptr` is a valid model; the vocab pointer it returns is
        // owned by the model and lives as long as it.
        let vocab = unsafe { ffi::llama_model_get_vocab(ptr.as_ptr()) };
        // SAFETY: valid model / vocab pointers (vocab checked for null first
        // by `NonNull::new` before any use).
        let (n_vocab, n_embd) = unsafe {
            let n_embd = ffi::llama_model_n_embd_inp(ptr.as_ptr());
            let n_vocab = if vocab.is_null() {
                0
            } else {
                ffi::llama_vocab_n_tokens(vocab)
            };
            (n_vocab, n_embd)
        };
        let (n_vocab, n_embd) = (
            usize::try_from(n_vocab).unwrap_or(0),
            usize::try_from(n_embd).unwrap_or(0),
        );
        // A null vocabulary has n_vocab 0, which `check` refuses.
        let tokens = table
            .map_or_else(|| TokenTable::open(path), Ok)
            .and_then(|t| t.check(path, n_embd, n_vocab));
        let tokens = match tokens {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: `ptr` came from llama_model_load_from_file and is
                // not wrapped in a LlamaModel yet: freed exactly once here.
                unsafe { ffi::llama_model_free(ptr.as_ptr()) };
                return Err(e);
            }
        };
        Ok(LlamaModel {
            ptr,
            // Checked non-null above.
            vocab: NonNull::new(vocab as *mut _).unwrap_or(NonNull::dangling()),
            n_vocab,
            n_embd,
            tokens,
        })
    }

    fn raw(&self) -> *const ffi::llama_model {
        self.ptr.as_ptr()
    }

    fn vocab(&self) -> *const ffi::llama_vocab {
        self.vocab.as_ptr()
    }

    /// Width of one input embedding row (`llama_model_n_embd_inp`; equal to
    /// the hidden size for Llama).
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Number of tokens in the vocabulary (= logits per position).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Appends the input embedding rows of `ids` ([`Self::n_embd`] floats
    /// each, the rows llama.cpp looks up for token input) to `out`.
    pub fn embed_tokens(&self, ids: &[i32], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(ids.len() * self.n_embd);
        for &id in ids {
            let i = self.tok_opt(id).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "token id {id} outside the vocabulary (0..{})",
                    self.n_vocab
                ))
            })?;
            out.extend(self.tokens.row(i as usize, self.n_embd)?);
        }
        Ok(())
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> usize {
        // SAFETY: valid model pointer; pure getter.
        let n = unsafe { ffi::llama_model_n_ctx_train(self.raw()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Number of transformer layers.
    pub fn n_layer(&self) -> usize {
        // SAFETY: valid model pointer; pure getter.
        let n = unsafe { ffi::llama_model_n_layer(self.raw()) };
        usize::try_from(n).unwrap_or(0)
    }

    fn tok_opt(&self, t: i32) -> Option<i32> {
        (t >= 0 && (t as usize) < self.n_vocab).then_some(t)
    }

    /// Beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<i32> {
        // SAFETY: valid vocab pointer; pure getter.
        self.tok_opt(unsafe { ffi::llama_vocab_bos(self.vocab()) })
    }

    /// End-of-sequence token, if the vocabulary has one.
    pub fn eos(&self) -> Option<i32> {
        // SAFETY: valid vocab pointer; pure getter.
        self.tok_opt(unsafe { ffi::llama_vocab_eos(self.vocab()) })
    }

    /// Whether `tok` ends generation (EOS, EOT, ...). False for ids outside
    /// the vocabulary.
    pub fn is_eog(&self, tok: i32) -> bool {
        if self.tok_opt(tok).is_none() {
            return false;
        }
        // SAFETY: valid vocab pointer, token id checked to be in range.
        unsafe { ffi::llama_vocab_is_eog(self.vocab(), tok) }
    }

    /// Tokenises `text` with llama.cpp's tokenizer (for this model the
    /// SentencePiece one, which prepends the dummy-prefix space to `text`).
    /// `add_bos` prepends the BOS token (regardless of the file's
    /// `add_bos_token` flag); `parse_special` lets control-token texts such as
    /// `</s>` in `text` become those tokens (otherwise they are plain text).
    pub fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<i32>> {
        let text_len = c_len(text.len(), "text")?;
        let mut out: Vec<i32> = Vec::new();
        if add_bos {
            let bos = self
                .bos()
                .ok_or_else(|| Error::InvalidModel("vocabulary has no BOS token".into()))?;
            out.push(bos);
        }
        if text.is_empty() {
            return Ok(out);
        }
        // SentencePiece never yields more tokens than bytes + the prefix space.
        let mut cap = text.len() + 2;
        for _ in 0..2 {
            let mut buf = vec![0i32; cap];
            let n_max = c_len(cap, "token buffer")?;
            // SAFETY: `text` points at `text_len` valid bytes (no NUL needed,
            // the length is passed); `buf` has room for `n_max` tokens and
            // llama_tokenize writes at most that many.
            let n = unsafe {
                ffi::llama_tokenize(
                    self.vocab(),
                    text.as_ptr() as *const c_char,
                    text_len,
                    buf.as_mut_ptr(),
                    n_max,
                    false,
                    parse_special,
                )
            };
            if n == i32::MIN {
                return Err(Error::InvalidArgument(
                    "tokenization overflows int32".into(),
                ));
            }
            if n >= 0 {
                buf.truncate(n as usize);
                out.extend_from_slice(&buf);
                return Ok(out);
            }
            // Negative: the number of tokens needed.
            cap = n.unsigned_abs() as usize;
        }
        Err(Error::Backend(with_detail(
            "llama_tokenize did not converge".into(),
        )))
    }

    /// The bytes of one token as llama.cpp renders it: SentencePiece pieces
    /// with `▁` turned into a space, byte tokens as their single raw byte
    /// (possibly part of a multi-byte UTF-8 character), control tokens as
    /// nothing. Ids outside the vocabulary give no bytes.
    pub fn token_to_piece(&self, tok: i32) -> Vec<u8> {
        if self.tok_opt(tok).is_none() {
            return Vec::new();
        }
        let mut buf = vec![0u8; 32];
        for _ in 0..2 {
            let len = match i32::try_from(buf.len()) {
                Ok(l) => l,
                Err(_) => return Vec::new(),
            };
            // SAFETY: token id checked to be in range (llama.cpp's cache uses
            // `.at()`, which would throw otherwise); `buf` holds `len`
            // writable bytes and llama_token_to_piece writes at most that.
            let n = unsafe {
                ffi::llama_token_to_piece(
                    self.vocab(),
                    tok,
                    buf.as_mut_ptr() as *mut c_char,
                    len,
                    0,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        Vec::new()
    }

    /// The token's text as stored in the vocabulary (e.g. `▁the`, `<0x0A>`).
    pub fn token_text(&self, tok: i32) -> Option<String> {
        self.tok_opt(tok)?;
        // SAFETY: in-range token id; the returned string is owned by the
        // vocabulary, NUL-terminated, and copied before we return.
        unsafe {
            let p = ffi::llama_vocab_get_text(self.vocab(), tok);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }
}

// ---------------------------------------------------------------- context

/// KV-cache element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum KvType {
    F32,
    F16,
}

impl KvType {
    fn raw(self) -> ffi::ggml_type {
        match self {
            KvType::F32 => ffi::GGML_TYPE_F32,
            KvType::F16 => ffi::GGML_TYPE_F16,
        }
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
    ptr: NonNull<ffi::llama_context>,
    model: Arc<LlamaModel>,
    n_ctx: usize,
    n_batch: usize,
    n_seq_max: usize,
    /// Batch rows (as llama_get_logits_ith takes them; -1 = the last
    /// output) whose logits the last successful decode produced, in order.
    out_rows: Vec<i32>,
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

/// A llama_batch from llama_batch_init, freed on drop.
struct Batch {
    raw: ffi::llama_batch,
    cap: usize,
    n_embd: usize,
}

impl Batch {
    /// A batch of `cap` rows: token ids (`n_embd == 0`) or embedding rows.
    fn new(cap: usize, n_embd: usize) -> Result<Batch> {
        let c = c_len(cap, "batch")?;
        let e = c_len(n_embd, "embedding width")?;
        if cap == 0 || cap.checked_mul(n_embd.max(1)).is_none() {
            return Err(Error::InvalidArgument("bad batch size".into()));
        }
        // SAFETY: positive sizes; llama_batch_init mallocs the arrays and
        // leaves them uninitialised (we fill every used entry).
        let raw = unsafe { ffi::llama_batch_init(c, e, 1) };
        let b = Batch { raw, cap, n_embd };
        let data_ok = if n_embd == 0 {
            !raw.token.is_null()
        } else {
            !raw.embd.is_null()
        };
        if !data_ok
            || raw.pos.is_null()
            || raw.n_seq_id.is_null()
            || raw.seq_id.is_null()
            || raw.logits.is_null()
        {
            return Err(Error::Backend("llama_batch_init: out of memory".into()));
        }
        Ok(b)
    }

    /// Fills rows 0..n with positions pos0.., sequence `seq` and the output
    /// flag on the last row only if `logits_last`.
    fn fill_common(&mut self, n: usize, pos0: i32, seq: i32, logits_last: bool) {
        self.fill_rows(n, |i| (pos0 + i as i32, seq, logits_last && i + 1 == n));
    }

    /// Fills rows 0..n with (position, sequence, output flag) of `row(i)`.
    fn fill_rows(&mut self, n: usize, row: impl Fn(usize) -> (i32, i32, bool)) {
        debug_assert!(n <= self.cap);
        // SAFETY: the arrays were allocated by llama_batch_init with `cap`
        // entries (checked non-null in `new`), `n <= cap`; each `seq_id[i]`
        // points at room for one id (allocated with n_seq_max = 1).
        unsafe {
            let pos = std::slice::from_raw_parts_mut(self.raw.pos, n);
            let nseq = std::slice::from_raw_parts_mut(self.raw.n_seq_id, n);
            let seq = std::slice::from_raw_parts_mut(self.raw.seq_id, n);
            let out = std::slice::from_raw_parts_mut(self.raw.logits, n);
            for i in 0..n {
                let (p, s, o) = row(i);
                pos[i] = p;
                nseq[i] = 1;
                *seq[i] = s;
                out[i] = i8::from(o);
            }
        }
        self.raw.n_tokens = n as i32;
    }

    fn set_tokens(&mut self, toks: &[i32]) {
        debug_assert!(self.n_embd == 0 && toks.len() <= self.cap);
        // SAFETY: `token` has `cap >= toks.len()` entries (non-null, token batch).
        unsafe {
            std::slice::from_raw_parts_mut(self.raw.token, toks.len()).copy_from_slice(toks);
        }
    }

    fn set_embd(&mut self, rows: &[f32]) {
        debug_assert!(self.n_embd > 0 && rows.len() <= self.cap * self.n_embd);
        // SAFETY: `embd` has `cap * n_embd >= rows.len()` floats (non-null,
        // embedding batch).
        unsafe {
            std::slice::from_raw_parts_mut(self.raw.embd, rows.len()).copy_from_slice(rows);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from llama_batch_init and is freed once; the
        // seq_id array is NULL-terminated by llama_batch_init.
        unsafe { ffi::llama_batch_free(self.raw) };
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
        p.type_k = params.type_k.raw();
        p.type_v = params.type_v.raw();
        p.flash_attn_type = params.flash_attn.raw();
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

    fn check_range(&self, pos0: usize, n: usize) -> Result<i32> {
        match pos0.checked_add(n) {
            Some(end) if end <= self.n_ctx => {}
            _ => {
                return Err(Error::ContextOverflow(format!(
                    "positions {pos0}..{} exceed the context of {} tokens",
                    pos0.saturating_add(n),
                    self.n_ctx
                )))
            }
        }
        i32::try_from(pos0).map_err(|_| Error::ContextOverflow(format!("position {pos0}")))
    }

    fn decode(&mut self, batch: &Batch) -> Result<()> {
        take_last_error();
        // SAFETY: valid context; `batch` is fully initialised for its
        // `n_tokens` rows (tokens or embeddings, positions, one sequence id
        // each, output flags); llama_decode only reads it.
        let rc = unsafe { ffi::llama_decode(self.ptr.as_ptr(), batch.raw) };
        match rc {
            0 => Ok(()),
            1 => Err(Error::ContextOverflow(with_detail(
                "no KV-cache slot for the batch".into(),
            ))),
            2 => Err(Error::Cancelled),
            rc => Err(Error::Backend(with_detail(format!(
                "llama_decode returned {rc}"
            )))),
        }
    }

    fn check_seq(&self, seq: usize) -> Result<i32> {
        if seq >= self.n_seq_max {
            return Err(Error::InvalidArgument(format!(
                "sequence {seq} outside the context's {} sequences",
                self.n_seq_max
            )));
        }
        Ok(seq as i32)
    }

    /// Decodes token ids at positions pos0.. (sequence 0), in chunks of at
    /// most [`Self::n_batch`]. With `logits_last` the logits of the last
    /// token are kept for [`Self::logits_last`].
    pub fn decode_tokens(&mut self, tokens: &[i32], pos0: usize, logits_last: bool) -> Result<()> {
        self.decode_tokens_seq(tokens, pos0, 0, logits_last)
    }

    /// As [`Self::decode_tokens`], for sequence `seq`.
    pub fn decode_tokens_seq(
        &mut self,
        tokens: &[i32],
        pos0: usize,
        seq: usize,
        logits_last: bool,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to decode".into()));
        }
        self.check_tokens(tokens)?;
        let seq = self.check_seq(seq)?;
        let pos0 = self.check_range(pos0, tokens.len())?;
        self.out_rows.clear();
        let mut batch = Batch::new(self.n_batch.min(tokens.len()), 0)?;
        let n_chunks = tokens.len().div_ceil(self.n_batch);
        for (i, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let last = i + 1 == n_chunks;
            batch.set_tokens(chunk);
            batch.fill_common(
                chunk.len(),
                pos0 + (i * self.n_batch) as i32,
                seq,
                last && logits_last,
            );
            self.decode(&batch)?;
        }
        self.out_rows = if logits_last { vec![-1] } else { Vec::new() };
        Ok(())
    }

    fn check_tokens(&self, tokens: &[i32]) -> Result<()> {
        let n_vocab = self.model.n_vocab();
        match tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
            Some(t) => Err(Error::InvalidArgument(format!(
                "token id {t} outside the vocabulary (0..{n_vocab})"
            ))),
            None => Ok(()),
        }
    }

    /// Decodes embedding rows (`rows.len() / n_embd` rows of
    /// [`LlamaModel::n_embd`] floats, row-major) at positions pos0..
    /// (sequence 0), in chunks of at most [`Self::n_batch`].
    pub fn decode_embd(&mut self, rows: &[f32], pos0: usize, logits_last: bool) -> Result<()> {
        self.decode_embd_seq(rows, pos0, 0, logits_last)
    }

    /// As [`Self::decode_embd`], for sequence `seq`.
    pub fn decode_embd_seq(
        &mut self,
        rows: &[f32],
        pos0: usize,
        seq: usize,
        logits_last: bool,
    ) -> Result<()> {
        let n = self.embd_rows(rows, "embedding buffer")?;
        let seq = self.check_seq(seq)?;
        let pos0 = self.check_range(pos0, n)?;
        let meta: Vec<(i32, i32, bool)> = (0..n)
            .map(|i| (pos0 + i as i32, seq, logits_last && i + 1 == n))
            .collect();
        self.decode_embd_rows(rows, &meta, |_| Ok(()))
    }

    /// Prefills several sequences from embedding rows in as few decodes as
    /// the batch allows: `seqs[j]` (rows of [`LlamaModel::n_embd`] floats)
    /// goes into sequence `j` at positions 0.. (its cells must be empty).
    /// Returns the logits of each sequence's last row (copied: a sequence
    /// may end in an earlier chunk than the last).
    pub fn decode_embd_seqs(&mut self, seqs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() || seqs.len() > self.n_seq_max {
            return Err(Error::InvalidArgument(format!(
                "{} sequences (1..={} allowed)",
                seqs.len(),
                self.n_seq_max
            )));
        }
        let mut meta: Vec<(i32, i32, bool)> = Vec::new();
        for (j, rows) in seqs.iter().enumerate() {
            let n = self.embd_rows(rows, &format!("sequence {j}"))?;
            self.check_range(0, n)?;
            meta.extend((0..n).map(|i| (i as i32, j as i32, i + 1 == n)));
        }
        if meta.len() > self.n_ctx {
            return Err(Error::ContextOverflow(format!(
                "{} rows exceed the context of {} cells",
                meta.len(),
                self.n_ctx
            )));
        }
        let mut logits = Vec::with_capacity(seqs.len());
        self.decode_embd_rows(&seqs.concat(), &meta, |ctx| {
            for i in 0..ctx.out_rows.len() {
                logits.push(ctx.logits_ith(i)?.to_vec());
            }
            Ok(())
        })?;
        Ok(logits)
    }

    /// The number of rows in `rows`: a non-empty multiple of n_embd floats.
    fn embd_rows(&self, rows: &[f32], what: &str) -> Result<usize> {
        let n_embd = self.model.n_embd();
        if rows.is_empty() || rows.len() % n_embd != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what} of {} floats is not a non-empty multiple of n_embd = {n_embd}",
                rows.len()
            )));
        }
        Ok(rows.len() / n_embd)
    }

    /// Decodes embedding rows (one `(position, sequence, output)` per row,
    /// checked by the caller) in batches of at most [`Self::n_batch`] rows.
    /// After each batch, the logits of its output rows are available
    /// ([`Self::logits_ith`]) to `each`.
    fn decode_embd_rows(
        &mut self,
        rows: &[f32],
        meta: &[(i32, i32, bool)],
        mut each: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let n_embd = self.model.n_embd();
        self.out_rows.clear();
        let mut batch = Batch::new(self.n_batch.min(meta.len()), n_embd)?;
        for (chunk, m) in rows
            .chunks(self.n_batch * n_embd)
            .zip(meta.chunks(self.n_batch))
        {
            batch.set_embd(chunk);
            batch.fill_rows(m.len(), |i| m[i]);
            self.out_rows.clear();
            self.decode(&batch)?;
            self.out_rows = (0..m.len() as i32).filter(|&i| m[i as usize].2).collect();
            each(self)?;
        }
        Ok(())
    }

    /// Decodes one token for each of several sequences in one batch:
    /// `steps[i] = (token, position, sequence)`, sequences distinct. Every
    /// row keeps its logits: row `i` is [`Self::logits_ith`]`(i)`.
    pub fn decode_step(&mut self, steps: &[(i32, usize, usize)]) -> Result<()> {
        if steps.is_empty() || steps.len() > self.n_batch {
            return Err(Error::InvalidArgument(format!(
                "{} rows in a step (1..={} allowed)",
                steps.len(),
                self.n_batch
            )));
        }
        let mut seen = vec![false; self.n_seq_max];
        let mut rows = Vec::with_capacity(steps.len());
        for &(tok, pos, seq) in steps {
            self.check_tokens(&[tok])?;
            let s = self.check_seq(seq)?;
            if std::mem::replace(&mut seen[seq], true) {
                return Err(Error::InvalidArgument(format!(
                    "sequence {seq} appears twice in one step"
                )));
            }
            rows.push((tok, self.check_range(pos, 1)?, s));
        }
        self.out_rows.clear();
        let mut batch = Batch::new(rows.len(), 0)?;
        let toks: Vec<i32> = rows.iter().map(|r| r.0).collect();
        batch.set_tokens(&toks);
        batch.fill_rows(rows.len(), |i| (rows[i].1, rows[i].2, true));
        self.decode(&batch)?;
        self.out_rows = (0..rows.len() as i32).collect();
        Ok(())
    }

    /// The logits (n_vocab floats) of the last row of the last decode,
    /// which must have produced logits.
    pub fn logits_last(&mut self) -> Result<&[f32]> {
        match self.out_rows.len() {
            0 => Err(Error::InvalidArgument(
                "the last decode produced no logits".into(),
            )),
            n => self.logits_ith(n - 1),
        }
    }

    /// The logits of output row `i` of the last decode (rows are counted
    /// among those that asked for logits, in batch order).
    pub fn logits_ith(&mut self, i: usize) -> Result<&[f32]> {
        let Some(&row) = self.out_rows.get(i) else {
            return Err(Error::InvalidArgument(format!(
                "logits row {i} does not exist (the last decode produced {})",
                self.out_rows.len()
            )));
        };
        // SAFETY: valid context; `row` is a batch row that the last decode
        // flagged for output (or -1, its last output), as recorded in
        // `out_rows`; llama.cpp returns null on failure (checked).
        let p = unsafe { ffi::llama_get_logits_ith(self.ptr.as_ptr(), row) };
        if p.is_null() {
            return Err(Error::Backend(with_detail(
                "llama.cpp returned no logits".into(),
            )));
        }
        // SAFETY: the row holds n_vocab floats owned by the context; the
        // slice borrows `self` mutably, so no decode can overwrite it while
        // it is alive.
        Ok(unsafe { std::slice::from_raw_parts(p, self.model.n_vocab()) })
    }
}

/// The most sequences a context may hold.
pub const MAX_SEQUENCES: u32 = 64;

// ---------------------------------------------------------------- sampler

/// Sampling settings for [`Sampler`].
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// <= 0: greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens (<= 0: off).
    pub top_k: i32,
    /// Keep the smallest set with cumulative probability >= top_p (>= 1: off).
    pub top_p: f32,
    pub seed: u32,
}

/// A llama.cpp sampler chain: greedy, or top-k → temperature → top-p →
/// random draw (the order of Hugging Face `generate`, which the reference
/// uses: its temperature warper runs before top-k / top-p; top-k commutes
/// with temperature, top-p does not).
pub struct Sampler {
    ptr: NonNull<ffi::llama_sampler>,
    greedy: bool,
}

// SAFETY: a sampler chain is plain heap state with no thread affinity.
unsafe impl Send for Sampler {}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain came from llama_sampler_chain_init and owns the
        // samplers added to it; freed once.
        unsafe { ffi::llama_sampler_free(self.ptr.as_ptr()) };
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("greedy", &self.greedy)
            .finish()
    }
}

impl Sampler {
    pub fn new(params: &SamplerParams) -> Result<Sampler> {
        init_backend();
        if !params.temperature.is_finite() {
            return Err(Error::InvalidArgument("temperature must be finite".into()));
        }
        if !params.top_p.is_finite() || params.top_p <= 0.0 {
            return Err(Error::InvalidArgument("top_p must be in (0, 1]".into()));
        }
        // SAFETY: plain constructor; null is handled.
        let chain = unsafe {
            let cp = ffi::llama_sampler_chain_default_params();
            ffi::llama_sampler_chain_init(cp)
        };
        let ptr = NonNull::new(chain)
            .ok_or_else(|| Error::Backend("llama_sampler_chain_init failed".into()))?;
        let s = Sampler {
            ptr,
            greedy: params.temperature <= 0.0,
        };
        let add = |smpl: *mut ffi::llama_sampler| -> Result<()> {
            if smpl.is_null() {
                return Err(Error::Backend("llama sampler init failed".into()));
            }
            // SAFETY: both pointers are valid; the chain takes ownership of
            // `smpl` and frees it with itself.
            unsafe { ffi::llama_sampler_chain_add(ptr.as_ptr(), smpl) };
            Ok(())
        };
        // The constructors below take validated plain arguments and return
        // a new sampler or null (rejected by `add`).
        if s.greedy {
            // SAFETY: no arguments; see above.
            add(unsafe { ffi::llama_sampler_init_greedy() })?;
        } else {
            if params.top_k > 0 {
                // SAFETY: k > 0; see above.
                add(unsafe { ffi::llama_sampler_init_top_k(params.top_k) })?;
            }
            // SAFETY: finite temperature > 0; see above.
            add(unsafe { ffi::llama_sampler_init_temp(params.temperature) })?;
            if params.top_p < 1.0 {
                // SAFETY: p in (0, 1), min_keep 1; see above.
                add(unsafe { ffi::llama_sampler_init_top_p(params.top_p, 1) })?;
            }
            // SAFETY: any seed is valid; see above.
            add(unsafe { ffi::llama_sampler_init_dist(params.seed) })?;
        }
        Ok(s)
    }

    /// Whether this is the deterministic argmax sampler.
    pub fn is_greedy(&self) -> bool {
        self.greedy
    }

    /// Picks a token from explicit logits (one per vocabulary entry) and
    /// accepts it.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<i32> {
        if logits.is_empty() || i32::try_from(logits.len()).is_err() {
            return Err(Error::InvalidArgument("bad logits length".into()));
        }
        let mut cur: Vec<ffi::llama_token_data> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| ffi::llama_token_data {
                id: i as i32,
                logit: l,
                p: 0.0,
            })
            .collect();
        let mut arr = ffi::llama_token_data_array {
            data: cur.as_mut_ptr(),
            size: cur.len(),
            selected: -1,
            sorted: false,
        };
        // SAFETY: valid chain; `arr` describes `cur`, which outlives the
        // call; samplers may reorder/shrink the array in place (they only
        // touch its `size` elements).
        unsafe { ffi::llama_sampler_apply(self.ptr.as_ptr(), &mut arr) };
        let sel = usize::try_from(arr.selected)
            .ok()
            .filter(|&s| s < arr.size)
            .ok_or_else(|| Error::Backend("sampler selected no token".into()))?;
        // `arr.data` may have been re-pointed by a sampler; read through it.
        // SAFETY: `sel < arr.size`, and `arr.data` points at `arr.size`
        // valid elements (either `cur` or sampler-owned storage).
        let tok = unsafe { (*arr.data.add(sel)).id };
        if tok < 0 || tok as usize >= logits.len() {
            return Err(Error::Backend(format!("sampler returned token {tok}")));
        }
        self.accept(tok);
        Ok(tok)
    }

    /// Picks a token from the context's logits row `idx` (-1 = last; the
    /// context keeps one row, so -1 and 0 are the valid values) and accepts
    /// it.
    pub fn sample(&mut self, ctx: &mut LlamaContext, idx: i32) -> Result<i32> {
        if idx != -1 && idx != 0 {
            return Err(Error::InvalidArgument(format!(
                "logits row {idx} does not exist"
            )));
        }
        let logits = ctx.logits_last()?;
        self.sample_logits(logits)
    }

    /// Tells the chain that `tok` was chosen (updates stateful samplers).
    pub fn accept(&mut self, tok: i32) {
        // SAFETY: valid chain; accept only updates sampler state.
        unsafe { ffi::llama_sampler_accept(self.ptr.as_ptr(), tok) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_sampler_picks_argmax() {
        let mut s = Sampler::new(&SamplerParams {
            temperature: 0.0,
            top_k: 50,
            top_p: 0.5,
            seed: 1,
        })
        .unwrap();
        assert!(s.is_greedy());
        assert_eq!(s.sample_logits(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
        assert!(s.sample_logits(&[]).is_err());
    }

    #[test]
    fn random_sampler_respects_top_k() {
        let mut s = Sampler::new(&SamplerParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        })
        .unwrap();
        for _ in 0..50 {
            let t = s.sample_logits(&[5.0, 0.0, 5.0, -3.0]).unwrap();
            assert!(t == 0 || t == 2);
        }
    }

    #[test]
    fn sampler_rejects_bad_params() {
        let p = SamplerParams {
            temperature: f32::NAN,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        assert!(Sampler::new(&p).is_err());
        let p = SamplerParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.0,
            seed: 0,
        };
        assert!(Sampler::new(&p).is_err());
    }

    #[test]
    fn missing_model_is_an_error() {
        let e = LlamaModel::load(Path::new("/nonexistent/x.gguf"), &ModelParams::default());
        assert!(matches!(e, Err(Error::Io(_))));
    }
}
