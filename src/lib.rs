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
pub mod sys;
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
