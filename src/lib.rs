//! dam: an embeddable inference engine for the Describe Anything Model.

pub mod capi;
pub mod error;
pub mod gguf_file;
pub mod image;
pub mod info;
pub mod llm;
pub mod log;
pub mod model;
pub mod overlay;

pub mod preprocess;
pub mod region;
pub mod request;
pub mod segmenter;
/// `dam serve`: the OpenAI-compatible captioning server (feature "server").
#[cfg(feature = "server")]
pub mod server;
/// The FFI into llama.cpp, ggml and gguf, with its safe wrappers; private:
/// what users need is re-exported below.
pub(crate) mod sys;
#[cfg(test)]
mod testing;
pub mod vision;
pub mod weights;

/// Converter from Hugging Face checkpoints and quantizer (source in `gguf/`).
#[path = "../gguf/mod.rs"]
pub mod convert;

pub use error::{Error, Result};

pub use image::{ImageView, Mask, PixelFormat, RgbImage};
pub use info::{backend_info, BackendInfo};
pub use llm::prompt::LengthControl;
pub use model::{
    find_model_files, CancelHandle, Caption, Captions, DescribeOptions, Frame, FrameInfo, Model,
    ModelParams, Session, Timings, VisionDevice, MAX_REGIONS,
};
pub use region::Region;
pub use sys::GgmlType;

/// ggml facts for tools and tests: the compute devices and CPU features
/// ggml finds, file mappings, and dequantisation of ggml rows.
pub mod ggml {
    pub use crate::sys::ggml::{cpu_features, devices, gpu_devices, Device, DeviceInfo};
    pub use crate::sys::types::dequantize;
    pub use crate::sys::MappedFile;
}

/// The llama.cpp layer the LLM stage runs on (model, context with
/// embedding input, tokenizer, sampler, log routing), for tools and tests
/// that drive llama.cpp directly.
pub mod llama {
    pub use crate::sys::llama::{
        init_backend, set_log_hook, ContextParams, FlashAttn, KvType, LlamaContext, LlamaModel,
        LogLevel, ModelParams, Sampler, SamplerParams,
    };
}
