//! The only place where dam calls into C (llama.cpp, ggml, gguf). Everything
//! here wraps a raw binding in a safe API; callers outside `sys` never see a
//! raw pointer.

// Every unsafe operation sits in its own `unsafe` block with its reason,
// also inside `unsafe fn`s (as in `capi`).
#![deny(unsafe_op_in_unsafe_fn)]

pub(crate) use llama_cpp_sys_2 as ffi;

pub mod ggml;
pub mod gguf;
pub mod llama;
pub mod mmap;
pub mod quantize;
pub mod resample;
pub mod types;

pub use mmap::MappedFile;
pub use types::GgmlType;
