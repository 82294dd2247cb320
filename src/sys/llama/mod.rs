//! A thin safe wrapper over llama.cpp's C API: backend init and logging,
//! models (weights + SentencePiece vocabulary), contexts (KV cache, decode of
//! token ids or of embedding rows, logits), cancellation and samplers.
//!
//! Nothing here re-implements llama.cpp: tokenisation, the KV cache and the
//! samplers are llama.cpp's own. Every argument is validated before it
//! reaches C, so that no caller input can trip a `GGML_ASSERT` (which would
//! abort the process); every C failure becomes an [`Error`].

mod backend;
mod batch;
mod context;
mod decode;
mod logging;
mod model;
mod sampler;
mod vocab;

pub use backend::{init_backend, supports_gpu_offload, system_info};
pub use context::{ContextParams, FlashAttn, KvType, LlamaContext, MAX_SEQUENCES};
pub use logging::{log, set_log_hook, LogLevel};
pub use model::{LlamaModel, ModelParams};
pub use sampler::{Sampler, SamplerParams};
pub use vocab::TokenTable;

use super::ffi;
use crate::error::{Error, Result};

/// Renders a C `int32` capacity request for a buffer of `n` elements.
fn c_len(n: usize, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{what} too long ({n})")))
}
