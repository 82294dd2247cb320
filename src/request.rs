//! What one request takes and gives back: options, frames, captions,
//! timings and the trace of every stage (the engine is in `model.rs`).

use crate::image::ImageView;
use crate::llm::generate::{GenerateOptions, Generation};
use crate::llm::prompt::{LengthControl, PromptPiece};
use crate::preprocess::{Views, Window};
use crate::region::Region;
use crate::vision::VisionOutput;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct DescribeOptions {
    /// The question (without `<image>`); None = the model's default query.
    pub query: Option<String>,
    /// Appends a length instruction the model was trained with.
    pub length: Option<LengthControl>,
    pub max_new_tokens: usize,
    /// 0 = greedy (deterministic).
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub seed: u32,
    /// Generate exactly `max_new_tokens` (see [`GenerateOptions::ignore_eos`]).
    pub ignore_eos: bool,
}

impl Default for DescribeOptions {
    /// The reference's defaults: temperature 0.2, top-p 0.5, 512 tokens.
    fn default() -> Self {
        let g = GenerateOptions::default();
        DescribeOptions {
            query: None,
            length: None,
            max_new_tokens: g.max_new_tokens,
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: g.top_k,
            seed: g.seed,
            ignore_eos: g.ignore_eos,
        }
    }
}

impl DescribeOptions {
    /// The generation settings of these options.
    pub fn generate_options(&self, collect_logits: bool) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            collect_logits,
            ignore_eos: self.ignore_eos,
        }
    }

    pub fn greedy() -> Self {
        DescribeOptions {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

/// One frame of a request: an image and the region to describe.
#[derive(Clone, Debug)]
pub struct Frame<'a> {
    pub image: ImageView<'a>,
    pub region: Region<'a>,
}

/// What the engine did with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The focal crop window (x0, y0, x1, y1), pixels.
    pub window: Window,
    /// The mask's bounding box (x0, y0, x1, y1), pixels.
    pub mask_box: (u32, u32, u32, u32),
    pub mask_pixels: usize,
    /// False when the focal view equals the full view (context provider skipped).
    pub context_applied: bool,
}

/// Time spent per stage of one call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub n_prompt_tokens: usize,
    pub n_generated: usize,
    /// Single-token decode steps (see [`crate::llm::Timings::n_decoded`]).
    pub n_decoded: usize,
}

impl Timings {
    /// Decode steps per second (0 if none ran), as
    /// [`crate::llm::Timings::decode_tokens_per_s`].
    pub fn decode_tokens_per_s(&self) -> f64 {
        crate::llm::generate::steps_per_s(self.n_decoded, self.decode_ms)
    }
}

/// A generated description.
#[derive(Clone, Debug, PartialEq)]
pub struct Caption {
    pub text: String,
    /// Generated token ids (the EOS id included when generation ended there).
    pub tokens: Vec<i32>,
    pub stopped_by_eos: bool,
    /// Per used frame (frames with empty masks are dropped from videos).
    pub frames: Vec<FrameInfo>,
    /// Indices of input frames dropped because their region was empty.
    pub dropped_frames: Vec<usize>,
    pub timings: Timings,
}

/// The result of [`crate::Session::describe_many`].
#[derive(Clone, Debug, PartialEq)]
pub struct Captions {
    /// One per region, in order. Their `preprocess_ms` and `vision_ms` are
    /// the batch's; `prefill_ms` is the region's share of the prefill of its
    /// wave (prompts prefilled together, shared by length); `decode_ms` is that of
    /// the decode loop the region was part of.
    pub captions: Vec<Caption>,
    /// The whole call: stage times (decode = the time of all decode loops)
    /// and token counts summed over the regions.
    pub timings: Timings,
}

/// Every intermediate of a call, for `dam dump` and parity tests.
pub struct Trace {
    pub views: Vec<Views>,
    pub vision: VisionOutput,
    pub prompt: String,
    pub prompt_ids: Vec<i64>,
    pub pieces: Vec<PromptPiece>,
    pub generation: Generation,
}
