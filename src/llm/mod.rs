//! The language-model side of DAM: the prompt (template, image slots,
//! tokenisation) and generation over llama.cpp (prefill with spliced image
//! embeddings, sampling, streaming text). Safe Rust only; the FFI lives in
//! `crate::sys::llama`.

pub mod check;
pub mod generate;
pub mod prompt;
pub mod tensors;

pub use generate::{
    generate, generate_from_embeddings, prefill, prefill_embeddings, GenerateOptions, Generation,
    StopReason, TextStream, Timings, TrimStream, Utf8Stream,
};
pub use prompt::{
    conversation, prompt_ids, tokenize_prompt, user_text, user_text_for, LengthControl, Media,
    PromptPiece,
};
