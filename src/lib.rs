//! dam: an embeddable inference engine for the Describe Anything Model.

pub mod error;
pub mod gguf_file;
pub mod image;
pub mod llm;

pub mod preprocess;
pub mod region;
pub mod sys;
pub mod vision;
pub mod weights;

/// Converter from Hugging Face checkpoints and quantizer (source in `gguf/`).
#[path = "../gguf/mod.rs"]
pub mod convert;

pub use error::{Error, Result};
