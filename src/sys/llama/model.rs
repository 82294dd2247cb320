//! A loaded llama.cpp model: weights, sizes and the token table.

use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

use super::backend::init_backend;
use super::ffi;
use super::logging::{take_last_error, with_detail};
use super::vocab::TokenTable;
use crate::error::{Error, Result};

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
    pub(super) ptr: NonNull<ffi::llama_model>,
    pub(super) vocab: NonNull<ffi::llama_vocab>,
    pub(super) n_vocab: usize,
    pub(super) n_embd: usize,
    pub(super) tokens: TokenTable,
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
        // SAFETY: `ptr` is a valid model; the vocab pointer is passed on
        // only when it is not null (checked here); both calls only read.
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
            // Not null: a null vocabulary has n_vocab 0, which `check` refused.
            vocab: NonNull::new(vocab as *mut _).unwrap_or(NonNull::dangling()),
            n_vocab,
            n_embd,
            tokens,
        })
    }

    pub(super) fn raw(&self) -> *const ffi::llama_model {
        self.ptr.as_ptr()
    }

    pub(super) fn vocab(&self) -> *const ffi::llama_vocab {
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

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> usize {
        // SAFETY: valid model pointer; pure getter.
        let n = unsafe { ffi::llama_model_n_ctx_train(self.raw()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Width of one attention head (the hidden size over the heads).
    pub fn head_width(&self) -> usize {
        // SAFETY: valid model pointer; pure getters.
        let (embd, heads) = unsafe {
            (
                ffi::llama_model_n_embd(self.raw()),
                ffi::llama_model_n_head(self.raw()),
            )
        };
        usize::try_from(embd / heads.max(1)).unwrap_or(0)
    }

    /// Number of transformer layers.
    pub fn n_layer(&self) -> usize {
        // SAFETY: valid model pointer; pure getter.
        let n = unsafe { ffi::llama_model_n_layer(self.raw()) };
        usize::try_from(n).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_is_an_error() {
        let e = LlamaModel::load(Path::new("/nonexistent/x.gguf"), &ModelParams::default());
        assert!(matches!(e, Err(Error::Io(_))));
    }
}
