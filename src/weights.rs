//! The dam GGUF format: key names, the tensor-name table shared by the
//! converter and the loader, and the hyper-parameter structs read from a file.
//! `gguf/README.md` documents the same table; `dam convert` writes exactly what
//! `VisionHparams::from_gguf` and `vision::VisionModel::load` check.

use crate::error::{Error, Result};
use crate::gguf_file::GgufHeader;
use crate::sys::GgmlType;

/// `general.architecture` of the vision file.
pub const VISION_ARCH: &str = "dam-vision";

/// Keys of the vision file (all under `dam.vision.` / `dam.prompt.`).
pub mod key {
    pub const IMAGE_SIZE: &str = "dam.vision.image_size";
    pub const PATCH_SIZE: &str = "dam.vision.patch_size";
    pub const HIDDEN: &str = "dam.vision.embedding_length";
    pub const HEADS: &str = "dam.vision.attention.head_count";
    pub const LAYERS: &str = "dam.vision.block_count";
    pub const FF: &str = "dam.vision.feed_forward_length";
    /// Optional (absent: the embedding length).
    pub const HIDDEN_IN: &str = "dam.vision.matrix_input_length";
    pub const EPS: &str = "dam.vision.attention.layer_norm_epsilon";
    pub const ACT: &str = "dam.vision.activation";
    pub const SELECT_LAYER: &str = "dam.vision.select_layer";
    pub const MASK_CHANNELS: &str = "dam.vision.num_mask_channels";
    pub const IMAGE_MEAN: &str = "dam.vision.image_mean";
    pub const IMAGE_STD: &str = "dam.vision.image_std";
    pub const RESAMPLE: &str = "dam.vision.resample";
    pub const CTX_TYPE: &str = "dam.context.type";
    pub const CTX_LAYERS: &str = "dam.context.block_count";
    pub const CTX_HEADS: &str = "dam.context.attention.head_count";
    pub const CTX_FF: &str = "dam.context.feed_forward_length";
    pub const CTX_EPS: &str = "dam.context.attention.layer_norm_epsilon";
    pub const CTX_ACT: &str = "dam.context.activation";
    pub const CTX_MASKED: &str = "dam.context.masked_cross_attn";
    pub const PROJ_TYPE: &str = "dam.projector.type";
    pub const PROJ_EPS: &str = "dam.projector.layer_norm_epsilon";
    pub const PROJ_OUT: &str = "dam.projector.output_length";
    pub const CONV_MODE: &str = "dam.prompt.conv_mode";
    pub const IMAGE_PREFIX: &str = "dam.prompt.image_prefix";
    pub const VIDEO_PREFIX: &str = "dam.prompt.video_prefix";
    pub const DEFAULT_QUERY: &str = "dam.prompt.default_query";
    pub const DEFAULT_VIDEO_QUERY: &str = "dam.prompt.default_video_query";
    pub const MAX_FRAMES: &str = "dam.prompt.max_frames";
}

/// A size in a tensor shape, resolved from the hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Vision width C.
    Hidden,
    /// The input width of the matrices that read the C-wide token stream
    /// (attention and MLP inputs): C, or C with zero columns added for the
    /// file's block size (`VisionHparams::padded_for`).
    HiddenIn,
    /// Vision MLP width.
    Ff,
    /// Cross-attention MLP width.
    CtxFf,
    Patch,
    Rgb,
    MaskChannels,
    /// g*g patch positions.
    Positions,
    /// 4C, the merged 2x2 token width.
    ProjIn,
    /// LLM width (projector output).
    LlmHidden,
    One,
}

/// How a tensor is stored: only `Matrix` takes the requested weight type;
/// everything else stays f32 (norms, biases, patch/position embeddings, gates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Matrix,
    F32,
}

/// Which checkpoint part a tensor comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `vision_tower/`, global tensors (HF names after the optional `vision_model.`).
    Tower,
    /// `vision_tower/`, one per used encoder layer (`{i}` in both names).
    TowerLayer,
    /// `context_provider/`, one per used cross-attention block.
    ContextLayer,
    /// `mm_projector/`.
    Projector,
}

/// One row of a tensor table. Shapes are in PyTorch order (outermost first);
/// the GGUF `ne` is the reverse. `P` says which instances a file holds and
/// `D` names the sizes (the vision file's [`Part`] and [`Dim`] by default;
/// the segmenter has its own).
#[derive(Clone, Copy, Debug)]
pub struct TensorDef<P = Part, D: 'static = Dim> {
    pub gguf: &'static str,
    pub hf: &'static str,
    pub part: P,
    pub shape: &'static [D],
    pub kind: Kind,
}

use Dim::*;
use Kind::{Matrix, F32};
use Part::*;

/// A table row.
pub const fn t<P: Copy, D: 'static>(
    gguf: &'static str,
    hf: &'static str,
    part: P,
    shape: &'static [D],
    kind: Kind,
) -> TensorDef<P, D> {
    TensorDef {
        gguf,
        hf,
        part,
        shape,
        kind,
    }
}

/// Every tensor of the vision file. `{i}` is the layer index.
pub const VISION_TENSORS: &[TensorDef] = &[
    t(
        "v.patch_embd.weight",
        "embeddings.patch_embedding.weight",
        Tower,
        &[Hidden, Rgb, Patch, Patch],
        F32,
    ),
    t(
        "v.patch_embd.bias",
        "embeddings.patch_embedding.bias",
        Tower,
        &[Hidden],
        F32,
    ),
    t(
        "v.mask_patch_embd.weight",
        "embeddings.mask_patch_embedding.weight",
        Tower,
        &[Hidden, MaskChannels, Patch, Patch],
        F32,
    ),
    t(
        "v.mask_patch_embd.bias",
        "embeddings.mask_patch_embedding.bias",
        Tower,
        &[Hidden],
        F32,
    ),
    t(
        "v.position_embd.weight",
        "embeddings.position_embedding.weight",
        Tower,
        &[Positions, Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.ln1.weight",
        "encoder.layers.{i}.layer_norm1.weight",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.ln1.bias",
        "encoder.layers.{i}.layer_norm1.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.attn_q.weight",
        "encoder.layers.{i}.self_attn.q_proj.weight",
        TowerLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.blk.{i}.attn_q.bias",
        "encoder.layers.{i}.self_attn.q_proj.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.attn_k.weight",
        "encoder.layers.{i}.self_attn.k_proj.weight",
        TowerLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.blk.{i}.attn_k.bias",
        "encoder.layers.{i}.self_attn.k_proj.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.attn_v.weight",
        "encoder.layers.{i}.self_attn.v_proj.weight",
        TowerLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.blk.{i}.attn_v.bias",
        "encoder.layers.{i}.self_attn.v_proj.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.attn_out.weight",
        "encoder.layers.{i}.self_attn.out_proj.weight",
        TowerLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.blk.{i}.attn_out.bias",
        "encoder.layers.{i}.self_attn.out_proj.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.ln2.weight",
        "encoder.layers.{i}.layer_norm2.weight",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.ln2.bias",
        "encoder.layers.{i}.layer_norm2.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.blk.{i}.ffn_up.weight",
        "encoder.layers.{i}.mlp.fc1.weight",
        TowerLayer,
        &[Ff, HiddenIn],
        Matrix,
    ),
    t(
        "v.blk.{i}.ffn_up.bias",
        "encoder.layers.{i}.mlp.fc1.bias",
        TowerLayer,
        &[Ff],
        F32,
    ),
    t(
        "v.blk.{i}.ffn_down.weight",
        "encoder.layers.{i}.mlp.fc2.weight",
        TowerLayer,
        &[Hidden, Ff],
        Matrix,
    ),
    t(
        "v.blk.{i}.ffn_down.bias",
        "encoder.layers.{i}.mlp.fc2.bias",
        TowerLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.ln1.weight",
        "context_provider_module.layers.{i}.layer_norm1.weight",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.ln1.bias",
        "context_provider_module.layers.{i}.layer_norm1.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.attn_q.weight",
        "context_provider_module.layers.{i}.cross_attn.q_proj.weight",
        ContextLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.ctx.blk.{i}.attn_q.bias",
        "context_provider_module.layers.{i}.cross_attn.q_proj.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.attn_k.weight",
        "context_provider_module.layers.{i}.cross_attn.k_proj.weight",
        ContextLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.ctx.blk.{i}.attn_k.bias",
        "context_provider_module.layers.{i}.cross_attn.k_proj.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.attn_v.weight",
        "context_provider_module.layers.{i}.cross_attn.v_proj.weight",
        ContextLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.ctx.blk.{i}.attn_v.bias",
        "context_provider_module.layers.{i}.cross_attn.v_proj.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.attn_out.weight",
        "context_provider_module.layers.{i}.cross_attn.out_proj.weight",
        ContextLayer,
        &[Hidden, HiddenIn],
        Matrix,
    ),
    t(
        "v.ctx.blk.{i}.attn_out.bias",
        "context_provider_module.layers.{i}.cross_attn.out_proj.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.ln2.weight",
        "context_provider_module.layers.{i}.layer_norm2.weight",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.ln2.bias",
        "context_provider_module.layers.{i}.layer_norm2.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.ffn_up.weight",
        "context_provider_module.layers.{i}.mlp.fc1.weight",
        ContextLayer,
        &[CtxFf, HiddenIn],
        Matrix,
    ),
    t(
        "v.ctx.blk.{i}.ffn_up.bias",
        "context_provider_module.layers.{i}.mlp.fc1.bias",
        ContextLayer,
        &[CtxFf],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.ffn_down.weight",
        "context_provider_module.layers.{i}.mlp.fc2.weight",
        ContextLayer,
        &[Hidden, CtxFf],
        Matrix,
    ),
    t(
        "v.ctx.blk.{i}.ffn_down.bias",
        "context_provider_module.layers.{i}.mlp.fc2.bias",
        ContextLayer,
        &[Hidden],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.attn_factor",
        "context_provider_module.layers.{i}.attn_factor",
        ContextLayer,
        &[One],
        F32,
    ),
    t(
        "v.ctx.blk.{i}.mlp_factor",
        "context_provider_module.layers.{i}.mlp_factor",
        ContextLayer,
        &[One],
        F32,
    ),
    t(
        "mm.norm.weight",
        "layers.1.weight",
        Projector,
        &[ProjIn],
        F32,
    ),
    t("mm.norm.bias", "layers.1.bias", Projector, &[ProjIn], F32),
    t(
        "mm.fc1.weight",
        "layers.2.weight",
        Projector,
        &[LlmHidden, ProjIn],
        Matrix,
    ),
    t("mm.fc1.bias", "layers.2.bias", Projector, &[LlmHidden], F32),
    t(
        "mm.fc2.weight",
        "layers.4.weight",
        Projector,
        &[LlmHidden, LlmHidden],
        Matrix,
    ),
    t("mm.fc2.bias", "layers.4.bias", Projector, &[LlmHidden], F32),
];

/// Substitutes the layer index into a table name.
pub fn layer_name(pattern: &str, i: usize) -> String {
    pattern.replace("{i}", &i.to_string())
}

/// Hyper-parameters of the vision file.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionHparams {
    pub image_size: u32,
    pub patch_size: u32,
    pub hidden: u32,
    /// Input width of the matrices reading the C-wide stream (`Dim::HiddenIn`).
    pub hidden_in: u32,
    pub heads: u32,
    /// Layers of the original tower (the file holds only the used ones).
    pub layers: u32,
    pub ff: u32,
    pub eps: f32,
    pub act: String,
    /// Index into `hidden_states` (negative counts from the end, -2 for DAM).
    pub select_layer: i32,
    pub mask_channels: u32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub ctx_type: String,
    pub ctx_layers: u32,
    pub ctx_heads: u32,
    pub ctx_ff: u32,
    pub ctx_eps: f32,
    pub ctx_act: String,
    pub ctx_masked: bool,
    pub proj_type: String,
    pub proj_eps: f32,
    pub llm_hidden: u32,
    pub conv_mode: String,
    pub image_prefix: String,
    pub video_prefix: String,
    pub default_query: String,
    pub default_video_query: String,
    pub max_frames: u32,
}

/// Limits that keep a hostile file from asking for absurd graphs.
pub(crate) const MAX_SIDE: u32 = 4096;
pub(crate) const MAX_WIDTH: u32 = 65536;
pub(crate) const MAX_LAYERS: u32 = 1024;

/// The checks every ViT's hyper-parameters need before a graph: an image
/// side that patches fit into, widths in range (`hidden` and `widths`),
/// heads that divide `hidden`.
pub(crate) fn check_tower(
    (image_size, patch_size): (u32, u32),
    (hidden, heads): (u32, u32),
    widths: &[(&str, u32)],
) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidModel(m));
    if patch_size == 0 || image_size < patch_size || image_size > MAX_SIDE {
        return bad(format!("image size {image_size} / patch size {patch_size}"));
    }
    for &(n, v) in [("hidden", hidden)].iter().chain(widths) {
        if v == 0 || v > MAX_WIDTH {
            return bad(format!("{n} size {v}"));
        }
    }
    if heads == 0 || hidden % heads != 0 {
        return bad(format!("{heads} heads do not divide width {hidden}"));
    }
    Ok(())
}

impl VisionHparams {
    /// Patches per side (the stride-P convolution ignores trailing pixels).
    pub fn grid(&self) -> u32 {
        self.image_size / self.patch_size
    }
    pub fn positions(&self) -> u32 {
        self.grid() * self.grid()
    }
    /// Patches per side after the 2x2 merge.
    pub fn merged_grid(&self) -> u32 {
        self.grid().div_ceil(2)
    }
    /// LLM tokens per image.
    pub fn tokens_per_image(&self) -> u32 {
        self.merged_grid() * self.merged_grid()
    }
    pub fn head_dim(&self) -> u32 {
        self.hidden / self.heads
    }
    /// Tower layers that run: `hidden_states[select_layer]` with
    /// hidden_states = [embeddings, layer 0, ..., layer L-1].
    pub fn used_layers(&self) -> u32 {
        if self.select_layer < 0 {
            (self.layers as i64 + 1 + self.select_layer as i64) as u32
        } else {
            self.select_layer as u32
        }
    }

    pub fn dim(&self, d: Dim) -> u64 {
        (match d {
            Hidden => self.hidden,
            HiddenIn => self.hidden_in,
            Ff => self.ff,
            CtxFf => self.ctx_ff,
            Patch => self.patch_size,
            Rgb => 3,
            MaskChannels => self.mask_channels,
            Positions => self.positions(),
            ProjIn => 4 * self.hidden,
            LlmHidden => self.llm_hidden,
            One => 1,
        }) as u64
    }

    /// The GGUF shape (ggml order) of a table entry.
    pub fn ne(&self, def: &TensorDef) -> Vec<u64> {
        def.shape.iter().rev().map(|&d| self.dim(d)).collect()
    }

    /// How many instances of a table entry the file holds.
    pub fn count(&self, part: Part) -> usize {
        match part {
            Tower | Projector => 1,
            TowerLayer | ContextLayer => self.used_layers() as usize,
        }
    }

    /// Every (gguf name, def) the file must contain, in file order.
    pub fn tensor_names(&self) -> Vec<(String, &'static TensorDef)> {
        let mut out = Vec::new();
        for def in VISION_TENSORS {
            for i in 0..self.count(def.part) {
                out.push((layer_name(def.gguf, i), def));
            }
        }
        out
    }

    /// The hparams of a file whose matrices are stored as `ty`: widths grown
    /// with zeros to a multiple of `ty`'s block size, so that the matrices
    /// are stored as `ty` rather than a fallback type, and so run ggml's
    /// kernels for `ty`. Outputs do not change:
    /// - the MLP widths (`ff`, `ctx_ff`; SigLIP-so400m's 4304 is not a
    ///   multiple of 32): the extra units get zero `ffn_up` rows and bias,
    ///   and zero `ffn_down` columns, so they add exactly 0;
    /// - the matrices' input width (`hidden_in`; 1152 is not a multiple of a
    ///   k-quant's 256): the graph pads their inputs with zeros, so the
    ///   extra columns multiply zeros. On AVX2, ggml's repacked q4_K product
    ///   runs 1.6x faster per value than q4_0's (per-32-block float scaling),
    ///   which pays for the 1/9 more work of 1152 -> 1280.
    ///
    /// Only where that costs at most 1/8 more work (4304 -> 4320 for q8_0,
    /// 4352 and 1280 for k-quants); wider padding keeps the fallback type.
    pub fn padded_for(&self, ty: GgmlType) -> VisionHparams {
        let pad = |w: u32| {
            let b = ty.block_size() as u32;
            let p = w.next_multiple_of(b.max(1));
            if ty.is_quantized() && (p - w) * 8 <= w {
                p
            } else {
                w
            }
        };
        VisionHparams {
            // Never narrower than the source file's (re-typing keeps it).
            hidden_in: pad(self.hidden).max(self.hidden_in),
            ff: pad(self.ff),
            ctx_ff: pad(self.ctx_ff),
            ..self.clone()
        }
    }

    /// Checks the values are usable before any ggml call.
    ///
    /// Long (~100 lines) on purpose: a flat list of independent checks, one
    /// per hyper-parameter, each with its own message; splitting it would
    /// only scatter the list.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        check_tower(
            (self.image_size, self.patch_size),
            (self.hidden, self.heads),
            &[
                ("ff", self.ff),
                ("ctx ff", self.ctx_ff),
                ("llm hidden", self.llm_hidden),
            ],
        )?;
        // Zero input columns, at most 1/8 more (`padded_for`).
        if self.hidden_in < self.hidden || self.hidden_in - self.hidden > self.hidden / 8 {
            return bad(format!(
                "matrix input length {} for width {}",
                self.hidden_in, self.hidden
            ));
        }
        if self.ctx_heads == 0 || self.hidden % self.ctx_heads != 0 {
            return bad(format!(
                "{} context heads do not divide width {}",
                self.ctx_heads, self.hidden
            ));
        }
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return bad(format!("{} layers", self.layers));
        }
        let used = self.layers as i64 + 1 + self.select_layer as i64;
        if self.select_layer < 0 && !(1..=self.layers as i64).contains(&used)
            || self.select_layer >= 0 && !(1..=self.layers as i32).contains(&self.select_layer)
        {
            return bad(format!(
                "select layer {} with {} layers",
                self.select_layer, self.layers
            ));
        }
        if self.ctx_layers < self.used_layers() {
            return bad(format!(
                "{} cross-attention blocks for {} used layers",
                self.ctx_layers,
                self.used_layers()
            ));
        }
        if self.mask_channels != 1 {
            return bad(format!(
                "{} mask channels (1 supported)",
                self.mask_channels
            ));
        }
        if !(self.eps > 0.0 && self.ctx_eps > 0.0 && self.proj_eps > 0.0) {
            return bad("layer norm epsilon must be positive".into());
        }
        if self.image_std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return bad("image std must be non-zero".into());
        }
        for (n, a) in [
            ("activation", &self.act),
            ("context activation", &self.ctx_act),
        ] {
            if a != "gelu_pytorch_tanh" && a != "gelu" {
                return bad(format!("{n} {a} is not supported"));
            }
        }
        if self.ctx_type != "cross_attn_end_to_all" {
            return bad(format!(
                "context provider type {} is not supported",
                self.ctx_type
            ));
        }
        if self.proj_type != "mlp_downsample" {
            return bad(format!(
                "projector type {} is not supported",
                self.proj_type
            ));
        }
        if self.conv_mode != "v1" {
            return bad(format!(
                "prompt conv mode {} is not supported",
                self.conv_mode
            ));
        }
        if self.max_frames == 0 || self.max_frames > 64 {
            return bad(format!("max frames {}", self.max_frames));
        }
        // dam places the image tokens itself: a placeholder in a prompt
        // string from the file would add image slots no image fills.
        for (k, v) in [
            (key::IMAGE_PREFIX, &self.image_prefix),
            (key::VIDEO_PREFIX, &self.video_prefix),
            (key::DEFAULT_QUERY, &self.default_query),
            (key::DEFAULT_VIDEO_QUERY, &self.default_video_query),
        ] {
            if v.contains(crate::llm::prompt::IMAGE_TOKEN) {
                return bad(format!("{k} must not contain <image>: {v:?}"));
            }
        }
        Ok(())
    }

    /// Reads and validates the hyper-parameters of a vision file.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self> {
        let arch = h.req_str("general.architecture")?;
        if arch != VISION_ARCH {
            let hint = if arch == "llama" {
                " (is this the LLM file?)"
            } else {
                ""
            };
            return Err(Error::InvalidModel(format!(
                "general.architecture is '{arch}', expected '{VISION_ARCH}'{hint}"
            )));
        }
        let hidden = h.req_u32(key::HIDDEN)?;
        let hp = VisionHparams {
            image_size: h.req_u32(key::IMAGE_SIZE)?,
            patch_size: h.req_u32(key::PATCH_SIZE)?,
            hidden,
            hidden_in: h.opt_u32(key::HIDDEN_IN)?.unwrap_or(hidden),
            heads: h.req_u32(key::HEADS)?,
            layers: h.req_u32(key::LAYERS)?,
            ff: h.req_u32(key::FF)?,
            eps: h.req_f32(key::EPS)?,
            act: h.req_str(key::ACT)?.to_string(),
            select_layer: h.req_i32(key::SELECT_LAYER)?,
            mask_channels: h.req_u32(key::MASK_CHANNELS)?,
            image_mean: h.req_f32_array(key::IMAGE_MEAN)?,
            image_std: h.req_f32_array(key::IMAGE_STD)?,
            ctx_type: h.req_str(key::CTX_TYPE)?.to_string(),
            ctx_layers: h.req_u32(key::CTX_LAYERS)?,
            ctx_heads: h.req_u32(key::CTX_HEADS)?,
            ctx_ff: h.req_u32(key::CTX_FF)?,
            ctx_eps: h.req_f32(key::CTX_EPS)?,
            ctx_act: h.req_str(key::CTX_ACT)?.to_string(),
            ctx_masked: h.req_bool(key::CTX_MASKED)?,
            proj_type: h.req_str(key::PROJ_TYPE)?.to_string(),
            proj_eps: h.req_f32(key::PROJ_EPS)?,
            llm_hidden: h.req_u32(key::PROJ_OUT)?,
            conv_mode: h.req_str(key::CONV_MODE)?.to_string(),
            image_prefix: h.req_str(key::IMAGE_PREFIX)?.to_string(),
            video_prefix: h.req_str(key::VIDEO_PREFIX)?.to_string(),
            default_query: h.req_str(key::DEFAULT_QUERY)?.to_string(),
            default_video_query: h.req_str(key::DEFAULT_VIDEO_QUERY)?.to_string(),
            max_frames: h.req_u32(key::MAX_FRAMES)?,
        };
        hp.validate()?;
        Ok(hp)
    }

    /// Checks that the file holds every tensor of the table with the right
    /// shape and an allowed type, and nothing unexpected.
    pub fn check_tensors(&self, h: &GgufHeader) -> Result<()> {
        let expected = self.tensor_names();
        check_tensor_set(
            h,
            expected
                .iter()
                .map(|(name, def)| (name.as_str(), self.ne(def), def.kind)),
        )
    }

    /// Writes the keys of this struct (the converter's half of `from_gguf`).
    pub fn write_keys(&self, w: &mut crate::sys::gguf::GgufWriter) -> Result<()> {
        w.set_str("general.architecture", VISION_ARCH)?;
        w.set_u32(key::IMAGE_SIZE, self.image_size)?;
        w.set_u32(key::PATCH_SIZE, self.patch_size)?;
        w.set_u32(key::HIDDEN, self.hidden)?;
        w.set_u32(key::HIDDEN_IN, self.hidden_in)?;
        w.set_u32(key::HEADS, self.heads)?;
        w.set_u32(key::LAYERS, self.layers)?;
        w.set_u32(key::FF, self.ff)?;
        w.set_f32(key::EPS, self.eps)?;
        w.set_str(key::ACT, &self.act)?;
        w.set_i32(key::SELECT_LAYER, self.select_layer)?;
        w.set_u32(key::MASK_CHANNELS, self.mask_channels)?;
        w.set_arr_f32(key::IMAGE_MEAN, &self.image_mean)?;
        w.set_arr_f32(key::IMAGE_STD, &self.image_std)?;
        w.set_str(key::RESAMPLE, "bicubic")?;
        w.set_str(key::CTX_TYPE, &self.ctx_type)?;
        w.set_u32(key::CTX_LAYERS, self.ctx_layers)?;
        w.set_u32(key::CTX_HEADS, self.ctx_heads)?;
        w.set_u32(key::CTX_FF, self.ctx_ff)?;
        w.set_f32(key::CTX_EPS, self.ctx_eps)?;
        w.set_str(key::CTX_ACT, &self.ctx_act)?;
        w.set_bool(key::CTX_MASKED, self.ctx_masked)?;
        w.set_str(key::PROJ_TYPE, &self.proj_type)?;
        w.set_f32(key::PROJ_EPS, self.proj_eps)?;
        w.set_u32(key::PROJ_OUT, self.llm_hidden)?;
        w.set_str(key::CONV_MODE, &self.conv_mode)?;
        w.set_str(key::IMAGE_PREFIX, &self.image_prefix)?;
        w.set_str(key::VIDEO_PREFIX, &self.video_prefix)?;
        w.set_str(key::DEFAULT_QUERY, &self.default_query)?;
        w.set_str(key::DEFAULT_VIDEO_QUERY, &self.default_video_query)?;
        w.set_u32(key::MAX_FRAMES, self.max_frames)?;
        Ok(())
    }
}

/// Checks that a file holds exactly the `expected` tensors (name, GGUF
/// shape, kind): each with its shape, f32 where the kind says so, and
/// nothing else. Matrices may have any type (the reader checked the rows).
pub fn check_tensor_set<'a>(
    h: &GgufHeader,
    expected: impl Iterator<Item = (&'a str, Vec<u64>, Kind)>,
) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for (name, ne, kind) in expected {
        let t = h
            .tensor(name)
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))?;
        if t.ne != ne {
            return Err(Error::InvalidModel(format!(
                "tensor {name} has shape {:?}, expected {ne:?}",
                t.ne
            )));
        }
        if kind == Kind::F32 && t.ty != GgmlType::F32 {
            return Err(Error::InvalidModel(format!(
                "tensor {name} has type {}, expected f32",
                t.ty.name()
            )));
        }
        names.insert(name);
    }
    if h.tensors.len() != names.len() {
        let extra: Vec<_> = h
            .tensors
            .iter()
            .filter(|t| !names.contains(t.name.as_str()))
            .map(|t| t.name.as_str())
            .take(5)
            .collect();
        return Err(Error::InvalidModel(format!(
            "unexpected tensors: {}",
            extra.join(", ")
        )));
    }
    Ok(())
}
