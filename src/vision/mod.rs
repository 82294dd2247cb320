//! The localized vision backbone: SigLIP with a mask channel on the full
//! view (-> Z), the same tower with gated cross-attention to Z on the focal
//! view (-> F), and the `mlp_downsample` projector (-> LLM embeddings).
//! One ggml graph per call; several images (video frames, regions) batch.

pub mod context;
pub mod graph;
pub mod projector;
pub mod siglip;

pub use graph::{Detail, VisionModel, VisionOptions, VisionOutput};
