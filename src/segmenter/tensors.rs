//! The segmenter GGUF format (`dam-segmenter`): keys, the tensor table that
//! the converter (`gguf/segmenter.rs`) and the loader share, and the
//! hyper-parameters read from a file.

use crate::error::{Error, Result};
use crate::gguf_file::GgufHeader;
use crate::weights::{
    self, check_tensor_set, check_tower, layer_name, Kind, MAX_LAYERS, MAX_WIDTH,
};

/// `general.architecture` of a segmenter file.
pub const SEGMENTER_ARCH: &str = "dam-segmenter";

/// Keys of the segmenter file (all under `dam.segmenter.`).
pub mod key {
    pub const IMAGE_SIZE: &str = "dam.segmenter.image_size";
    pub const PATCH_SIZE: &str = "dam.segmenter.patch_size";
    pub const HIDDEN: &str = "dam.segmenter.embedding_length";
    pub const HEADS: &str = "dam.segmenter.attention.head_count";
    pub const LAYERS: &str = "dam.segmenter.block_count";
    pub const FF: &str = "dam.segmenter.feed_forward_length";
    pub const EPS: &str = "dam.segmenter.attention.layer_norm_epsilon";
    pub const WINDOW: &str = "dam.segmenter.window_size";
    pub const GLOBAL_LAYERS: &str = "dam.segmenter.global_attn_indexes";
    pub const OUT: &str = "dam.segmenter.output_length";
    pub const MASK_IN: &str = "dam.segmenter.mask_input_channels";
    pub const DEC_LAYERS: &str = "dam.segmenter.decoder.block_count";
    pub const DEC_HEADS: &str = "dam.segmenter.decoder.attention.head_count";
    pub const DEC_FF: &str = "dam.segmenter.decoder.feed_forward_length";
    pub const DEC_EPS: &str = "dam.segmenter.decoder.layer_norm_epsilon";
    pub const DOWNSAMPLE: &str = "dam.segmenter.decoder.attention_downsample_rate";
    pub const MULTIMASK: &str = "dam.segmenter.decoder.multimask_outputs";
    pub const IOU_DEPTH: &str = "dam.segmenter.decoder.iou_head_depth";
    pub const IOU_HIDDEN: &str = "dam.segmenter.decoder.iou_head_hidden_length";
    pub const LONGEST_EDGE: &str = "dam.segmenter.preprocess.longest_edge";
    pub const IMAGE_MEAN: &str = "dam.segmenter.preprocess.image_mean";
    pub const IMAGE_STD: &str = "dam.segmenter.preprocess.image_std";
    pub const RESAMPLE: &str = "dam.segmenter.preprocess.resample";
}

/// A size in a tensor shape, resolved from the hyper-parameters (and, for
/// relative positions, the layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Encoder width.
    Hidden,
    /// Encoder MLP width.
    Ff,
    /// Encoder head width.
    HeadDim,
    Patch,
    Rgb,
    /// Patches per side.
    Grid,
    /// `2 s - 1` relative offsets of layer i (s: window or grid side).
    RelPos,
    /// Neck / prompt / decoder width O, and O/2, O/4, O/8.
    Out,
    Out2,
    Out4,
    Out8,
    /// Cross-attention width O / downsample rate.
    Inner,
    DecFf,
    MaskIn,
    MaskIn4,
    /// Mask tokens: multimask outputs + 1.
    MaskTokens,
    IouHidden,
    One,
    Two,
    Three,
}

/// Which instances of a table row a file holds (`{i}` in the names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Global,
    /// One per encoder layer.
    EncLayer,
    /// One per two-way transformer layer.
    DecLayer,
    /// One per point embedding (4: negative, positive, box corners).
    PointEmbed,
    /// One per mask token's hypernetwork MLP.
    Hyper,
    /// The IoU head's hidden layers (depth - 2).
    IouMid,
}

/// How a file tensor is made from its checkpoint tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The checkpoint tensor as it is.
    Same,
    /// Part k of 3 of the fused `qkv` rows.
    Third(usize),
    /// `ConvTranspose2d` weight [in, out, kh, kw] stored as [kh, kw, out, in],
    /// so one product gives all four outputs of a 2x2 stride-2 kernel.
    ConvT,
    /// A 1x1 `Conv2d` weight [out, in, 1, 1] stored as the matrix [out, in].
    Conv1x1,
}

/// One row of the tensor table: shapes in PyTorch order of the *file*
/// tensor (the GGUF `ne` is the reverse), and how the checkpoint's tensor
/// becomes it.
#[derive(Clone, Copy, Debug)]
pub struct TensorDef {
    pub row: weights::TensorDef<Part, Dim>,
    pub transform: Transform,
}

use Dim::*;
use Kind::{Matrix, F32};
use Part::*;
use Transform::{Conv1x1, ConvT, Same, Third};

const fn t(
    gguf: &'static str,
    hf: &'static str,
    part: Part,
    shape: &'static [Dim],
    kind: Kind,
) -> TensorDef {
    TensorDef {
        row: weights::t(gguf, hf, part, shape, kind),
        transform: Same,
    }
}

const fn x(def: TensorDef, transform: Transform) -> TensorDef {
    TensorDef { transform, ..def }
}

/// `{p}.weight` [out, in] (the requested type) and `{p}.bias` [out] (f32).
macro_rules! linear {
    ($g:literal, $h:literal, $part:expr, $out:expr, $in:expr) => {
        [
            t(
                concat!($g, ".weight"),
                concat!($h, ".weight"),
                $part,
                &[$out, $in],
                Matrix,
            ),
            t(
                concat!($g, ".bias"),
                concat!($h, ".bias"),
                $part,
                &[$out],
                F32,
            ),
        ]
    };
}

/// `{p}.weight` and `{p}.bias`, both [n] f32.
macro_rules! norm {
    ($g:literal, $h:literal, $part:expr, $n:expr) => {
        [
            t(
                concat!($g, ".weight"),
                concat!($h, ".weight"),
                $part,
                &[$n],
                F32,
            ),
            t(
                concat!($g, ".bias"),
                concat!($h, ".bias"),
                $part,
                &[$n],
                F32,
            ),
        ]
    };
}

/// A two-way transformer attention block (`q_proj`..`out_proj`).
macro_rules! dec_attn {
    ($g:literal, $h:literal, $part:expr, $inner:expr) => {
        [
            t(
                concat!($g, "_q.weight"),
                concat!($h, ".q_proj.weight"),
                $part,
                &[$inner, Out],
                Matrix,
            ),
            t(
                concat!($g, "_q.bias"),
                concat!($h, ".q_proj.bias"),
                $part,
                &[$inner],
                F32,
            ),
            t(
                concat!($g, "_k.weight"),
                concat!($h, ".k_proj.weight"),
                $part,
                &[$inner, Out],
                Matrix,
            ),
            t(
                concat!($g, "_k.bias"),
                concat!($h, ".k_proj.bias"),
                $part,
                &[$inner],
                F32,
            ),
            t(
                concat!($g, "_v.weight"),
                concat!($h, ".v_proj.weight"),
                $part,
                &[$inner, Out],
                Matrix,
            ),
            t(
                concat!($g, "_v.bias"),
                concat!($h, ".v_proj.bias"),
                $part,
                &[$inner],
                F32,
            ),
            t(
                concat!($g, "_out.weight"),
                concat!($h, ".out_proj.weight"),
                $part,
                &[Out, $inner],
                Matrix,
            ),
            t(
                concat!($g, "_out.bias"),
                concat!($h, ".out_proj.bias"),
                $part,
                &[Out],
                F32,
            ),
        ]
    };
}

/// Every tensor of a segmenter file, in file order (groups of rows; `{i}`
/// is the instance, see [`Part`]).
#[rustfmt::skip]
pub const SEGMENTER_TENSORS: &[&[TensorDef]] = &[
    &[
        t("enc.patch_embd.weight", "vision_encoder.patch_embed.projection.weight", Global, &[Hidden, Rgb, Patch, Patch], F32),
        t("enc.patch_embd.bias", "vision_encoder.patch_embed.projection.bias", Global, &[Hidden], F32),
        t("enc.pos_embd", "vision_encoder.pos_embed", Global, &[One, Grid, Grid, Hidden], F32),
    ],
    &norm!("enc.blk.{i}.ln1", "vision_encoder.layers.{i}.layer_norm1", EncLayer, Hidden),
    &[
        x(t("enc.blk.{i}.attn_q.weight", "vision_encoder.layers.{i}.attn.qkv.weight", EncLayer, &[Hidden, Hidden], Matrix), Third(0)),
        x(t("enc.blk.{i}.attn_q.bias", "vision_encoder.layers.{i}.attn.qkv.bias", EncLayer, &[Hidden], F32), Third(0)),
        x(t("enc.blk.{i}.attn_k.weight", "vision_encoder.layers.{i}.attn.qkv.weight", EncLayer, &[Hidden, Hidden], Matrix), Third(1)),
        x(t("enc.blk.{i}.attn_k.bias", "vision_encoder.layers.{i}.attn.qkv.bias", EncLayer, &[Hidden], F32), Third(1)),
        x(t("enc.blk.{i}.attn_v.weight", "vision_encoder.layers.{i}.attn.qkv.weight", EncLayer, &[Hidden, Hidden], Matrix), Third(2)),
        x(t("enc.blk.{i}.attn_v.bias", "vision_encoder.layers.{i}.attn.qkv.bias", EncLayer, &[Hidden], F32), Third(2)),
        t("enc.blk.{i}.rel_pos_h", "vision_encoder.layers.{i}.attn.rel_pos_h", EncLayer, &[RelPos, HeadDim], F32),
        t("enc.blk.{i}.rel_pos_w", "vision_encoder.layers.{i}.attn.rel_pos_w", EncLayer, &[RelPos, HeadDim], F32),
    ],
    &linear!("enc.blk.{i}.attn_out", "vision_encoder.layers.{i}.attn.proj", EncLayer, Hidden, Hidden),
    &norm!("enc.blk.{i}.ln2", "vision_encoder.layers.{i}.layer_norm2", EncLayer, Hidden),
    &linear!("enc.blk.{i}.ffn_up", "vision_encoder.layers.{i}.mlp.lin1", EncLayer, Ff, Hidden),
    &linear!("enc.blk.{i}.ffn_down", "vision_encoder.layers.{i}.mlp.lin2", EncLayer, Hidden, Ff),
    &[x(t("enc.neck.conv1.weight", "vision_encoder.neck.conv1.weight", Global, &[Out, Hidden], Matrix), Conv1x1)],
    &norm!("enc.neck.ln1", "vision_encoder.neck.layer_norm1", Global, Out),
    &[t("enc.neck.conv2.weight", "vision_encoder.neck.conv2.weight", Global, &[Out, Out, Three, Three], F32)],
    &norm!("enc.neck.ln2", "vision_encoder.neck.layer_norm2", Global, Out),
    &[
        t("prompt.pe_gaussian", "shared_image_embedding.positional_embedding", Global, &[Two, Out2], F32),
        t("prompt.point_embd.{i}", "prompt_encoder.point_embed.{i}.weight", PointEmbed, &[One, Out], F32),
        t("prompt.not_a_point", "prompt_encoder.not_a_point_embed.weight", Global, &[One, Out], F32),
        t("prompt.no_mask", "prompt_encoder.no_mask_embed.weight", Global, &[One, Out], F32),
        t("prompt.mask.conv1.weight", "prompt_encoder.mask_embed.conv1.weight", Global, &[MaskIn4, One, Two, Two], F32),
        t("prompt.mask.conv1.bias", "prompt_encoder.mask_embed.conv1.bias", Global, &[MaskIn4], F32),
    ],
    &norm!("prompt.mask.ln1", "prompt_encoder.mask_embed.layer_norm1", Global, MaskIn4),
    &[
        t("prompt.mask.conv2.weight", "prompt_encoder.mask_embed.conv2.weight", Global, &[MaskIn, MaskIn4, Two, Two], F32),
        t("prompt.mask.conv2.bias", "prompt_encoder.mask_embed.conv2.bias", Global, &[MaskIn], F32),
    ],
    &norm!("prompt.mask.ln2", "prompt_encoder.mask_embed.layer_norm2", Global, MaskIn),
    &[
        t("prompt.mask.conv3.weight", "prompt_encoder.mask_embed.conv3.weight", Global, &[Out, MaskIn, One, One], F32),
        t("prompt.mask.conv3.bias", "prompt_encoder.mask_embed.conv3.bias", Global, &[Out], F32),
        t("dec.iou_token", "mask_decoder.iou_token.weight", Global, &[One, Out], F32),
        t("dec.mask_tokens", "mask_decoder.mask_tokens.weight", Global, &[MaskTokens, Out], F32),
    ],
    &dec_attn!("dec.blk.{i}.self_attn", "mask_decoder.transformer.layers.{i}.self_attn", DecLayer, Out),
    &norm!("dec.blk.{i}.ln1", "mask_decoder.transformer.layers.{i}.layer_norm1", DecLayer, Out),
    &norm!("dec.blk.{i}.ln2", "mask_decoder.transformer.layers.{i}.layer_norm2", DecLayer, Out),
    &norm!("dec.blk.{i}.ln3", "mask_decoder.transformer.layers.{i}.layer_norm3", DecLayer, Out),
    &norm!("dec.blk.{i}.ln4", "mask_decoder.transformer.layers.{i}.layer_norm4", DecLayer, Out),
    &dec_attn!("dec.blk.{i}.t2i_attn", "mask_decoder.transformer.layers.{i}.cross_attn_token_to_image", DecLayer, Inner),
    &linear!("dec.blk.{i}.ffn_up", "mask_decoder.transformer.layers.{i}.mlp.lin1", DecLayer, DecFf, Out),
    &linear!("dec.blk.{i}.ffn_down", "mask_decoder.transformer.layers.{i}.mlp.lin2", DecLayer, Out, DecFf),
    &dec_attn!("dec.blk.{i}.i2t_attn", "mask_decoder.transformer.layers.{i}.cross_attn_image_to_token", DecLayer, Inner),
    &dec_attn!("dec.final_attn", "mask_decoder.transformer.final_attn_token_to_image", Global, Inner),
    &norm!("dec.final_ln", "mask_decoder.transformer.layer_norm_final_attn", Global, Out),
    &[
        x(t("dec.upscale1.weight", "mask_decoder.upscale_conv1.weight", Global, &[Two, Two, Out4, Out], Matrix), ConvT),
        t("dec.upscale1.bias", "mask_decoder.upscale_conv1.bias", Global, &[Out4], F32),
        t("dec.upscale_ln.weight", "mask_decoder.upscale_layer_norm.weight", Global, &[Out4], F32),
        t("dec.upscale_ln.bias", "mask_decoder.upscale_layer_norm.bias", Global, &[Out4], F32),
        x(t("dec.upscale2.weight", "mask_decoder.upscale_conv2.weight", Global, &[Two, Two, Out8, Out4], Matrix), ConvT),
        t("dec.upscale2.bias", "mask_decoder.upscale_conv2.bias", Global, &[Out8], F32),
    ],
    &linear!("dec.hyper.{i}.fc_in", "mask_decoder.output_hypernetworks_mlps.{i}.proj_in", Hyper, Out, Out),
    &linear!("dec.hyper.{i}.fc_mid", "mask_decoder.output_hypernetworks_mlps.{i}.layers.0", Hyper, Out, Out),
    &linear!("dec.hyper.{i}.fc_out", "mask_decoder.output_hypernetworks_mlps.{i}.proj_out", Hyper, Out8, Out),
    &linear!("dec.iou.fc_in", "mask_decoder.iou_prediction_head.proj_in", Global, IouHidden, Out),
    &linear!("dec.iou.fc_out", "mask_decoder.iou_prediction_head.proj_out", Global, MaskTokens, IouHidden),
    &linear!("dec.iou.fc_mid.{i}", "mask_decoder.iou_prediction_head.layers.{i}", IouMid, IouHidden, IouHidden),
];

/// The table's rows in file order.
pub fn defs() -> impl Iterator<Item = &'static TensorDef> {
    SEGMENTER_TENSORS.iter().flat_map(|g| g.iter())
}

/// Hyper-parameters of a segmenter file (SAM's `SamConfig` and processor).
#[derive(Clone, Debug, PartialEq)]
pub struct SegmenterHparams {
    /// Encoder input side S (the processor pads to S x S).
    pub image_size: u32,
    pub patch_size: u32,
    pub hidden: u32,
    pub heads: u32,
    pub layers: u32,
    pub ff: u32,
    pub eps: f32,
    /// Side of the windowed layers' attention windows.
    pub window: u32,
    /// Layers with global attention (the others are windowed).
    pub global_layers: Vec<u32>,
    /// Neck / prompt / decoder width.
    pub out: u32,
    pub mask_in: u32,
    pub dec_layers: u32,
    pub dec_heads: u32,
    pub dec_ff: u32,
    pub dec_eps: f32,
    pub downsample: u32,
    pub multimask: u32,
    pub iou_depth: u32,
    pub iou_hidden: u32,
    /// The processor's resize target for the longest side.
    pub longest_edge: u32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl SegmenterHparams {
    /// Patches per side of the image embedding.
    pub fn grid(&self) -> u32 {
        self.image_size / self.patch_size
    }
    /// Attention side of layer `i`: the window, or the grid when global.
    pub fn attn_side(&self, i: usize) -> u32 {
        if self.global_layers.contains(&(i as u32)) {
            self.grid()
        } else {
            self.window
        }
    }
    pub fn is_global(&self, i: usize) -> bool {
        self.global_layers.contains(&(i as u32))
    }

    fn dim(&self, d: Dim, i: usize) -> u64 {
        u64::from(match d {
            Hidden => self.hidden,
            Ff => self.ff,
            HeadDim => self.hidden / self.heads,
            Patch => self.patch_size,
            Rgb => 3,
            Grid => self.grid(),
            RelPos => 2 * self.attn_side(i) - 1,
            Out => self.out,
            Out2 => self.out / 2,
            Out4 => self.out / 4,
            Out8 => self.out / 8,
            Inner => self.out / self.downsample,
            DecFf => self.dec_ff,
            MaskIn => self.mask_in,
            MaskIn4 => self.mask_in / 4,
            MaskTokens => self.multimask + 1,
            IouHidden => self.iou_hidden,
            One => 1,
            Two => 2,
            Three => 3,
        })
    }

    /// The file shape in PyTorch order of instance `i` of a table row.
    pub fn shape(&self, def: &TensorDef, i: usize) -> Vec<u64> {
        def.row.shape.iter().map(|&d| self.dim(d, i)).collect()
    }

    /// The GGUF shape (ggml order) of instance `i` of a table row, without
    /// trailing 1s (GGUF stores a tensor's rank without them).
    pub fn ne(&self, def: &TensorDef, i: usize) -> Vec<u64> {
        let mut s = self.shape(def, i);
        s.reverse();
        while s.len() > 1 && s.last() == Some(&1) {
            s.pop();
        }
        s
    }

    /// How many instances of a table row the file holds.
    pub fn count(&self, part: Part) -> usize {
        (match part {
            Global => 1,
            EncLayer => self.layers,
            DecLayer => self.dec_layers,
            PointEmbed => 4,
            Hyper => self.multimask + 1,
            IouMid => self.iou_depth - 2,
        }) as usize
    }

    /// Every (gguf name, def, instance) of the file, in file order.
    pub fn tensor_names(&self) -> Vec<(String, &'static TensorDef, usize)> {
        defs()
            .flat_map(|def| {
                (0..self.count(def.row.part)).map(move |i| (layer_name(def.row.gguf, i), def, i))
            })
            .collect()
    }

    /// Checks the values are usable before any ggml call.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        check_tower(
            (self.image_size, self.patch_size),
            (self.hidden, self.heads),
            &[
                ("ff", self.ff),
                ("decoder ff", self.dec_ff),
                ("iou hidden", self.iou_hidden),
            ],
        )?;
        if self.longest_edge != self.image_size {
            return bad(format!(
                "longest edge {} differs from the encoder's input side {}",
                self.longest_edge, self.image_size
            ));
        }
        let inner = self.out / self.downsample.max(1);
        if self.out == 0
            || self.out > MAX_WIDTH
            || self.out % 8 != 0
            || self.downsample == 0
            || self.out % self.downsample != 0
            || self.dec_heads == 0
            || inner % self.dec_heads != 0
            || self.out % self.dec_heads != 0
        {
            return bad(format!(
                "decoder width {} with {} heads and downsample rate {}",
                self.out, self.dec_heads, self.downsample
            ));
        }
        if self.mask_in == 0 || self.mask_in % 4 != 0 || self.mask_in > MAX_WIDTH {
            return bad(format!("{} mask input channels", self.mask_in));
        }
        if self.layers == 0
            || self.layers > MAX_LAYERS
            || self.dec_layers == 0
            || self.dec_layers > MAX_LAYERS
        {
            return bad(format!(
                "{} encoder / {} decoder layers",
                self.layers, self.dec_layers
            ));
        }
        if self.window == 0 || self.window > self.grid().max(1) * 2 {
            return bad(format!("window size {}", self.window));
        }
        if self.global_layers.iter().any(|&l| l >= self.layers) {
            return bad(format!(
                "global attention layers {:?} of {}",
                self.global_layers, self.layers
            ));
        }
        if self.multimask == 0 || self.multimask > 16 || !(2..=16).contains(&self.iou_depth) {
            return bad(format!(
                "{} mask outputs, IoU head depth {}",
                self.multimask, self.iou_depth
            ));
        }
        if !(self.eps > 0.0 && self.dec_eps > 0.0) {
            return bad("layer norm epsilon must be positive".into());
        }
        if self.image_std.iter().any(|&s| s == 0.0 || !s.is_finite())
            || self.image_mean.iter().any(|m| !m.is_finite())
        {
            return bad("image mean / std must be finite, std non-zero".into());
        }
        Ok(())
    }

    /// Reads and validates the hyper-parameters of a segmenter file.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self> {
        let arch = h.req_str("general.architecture")?;
        if arch != SEGMENTER_ARCH {
            return Err(Error::InvalidModel(format!(
                "general.architecture is '{arch}', expected '{SEGMENTER_ARCH}'"
            )));
        }
        let resample = h.req_str(key::RESAMPLE)?;
        if resample != "bilinear" {
            return Err(Error::InvalidModel(format!(
                "resample {resample:?} (bilinear supported)"
            )));
        }
        let global_layers = match h.get(key::GLOBAL_LAYERS).and_then(|v| v.as_array()) {
            Some(a) => a
                .iter()
                .map(|v| v.as_i64().and_then(|x| u32::try_from(x).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| {
                    Error::InvalidModel(format!(
                        "{} is not a list of layer indexes",
                        key::GLOBAL_LAYERS
                    ))
                })?,
            None => {
                return Err(Error::InvalidModel(format!(
                    "missing key {}",
                    key::GLOBAL_LAYERS
                )))
            }
        };
        let hp = SegmenterHparams {
            image_size: h.req_u32(key::IMAGE_SIZE)?,
            patch_size: h.req_u32(key::PATCH_SIZE)?,
            hidden: h.req_u32(key::HIDDEN)?,
            heads: h.req_u32(key::HEADS)?,
            layers: h.req_u32(key::LAYERS)?,
            ff: h.req_u32(key::FF)?,
            eps: h.req_f32(key::EPS)?,
            window: h.req_u32(key::WINDOW)?,
            global_layers,
            out: h.req_u32(key::OUT)?,
            mask_in: h.req_u32(key::MASK_IN)?,
            dec_layers: h.req_u32(key::DEC_LAYERS)?,
            dec_heads: h.req_u32(key::DEC_HEADS)?,
            dec_ff: h.req_u32(key::DEC_FF)?,
            dec_eps: h.req_f32(key::DEC_EPS)?,
            downsample: h.req_u32(key::DOWNSAMPLE)?,
            multimask: h.req_u32(key::MULTIMASK)?,
            iou_depth: h.req_u32(key::IOU_DEPTH)?,
            iou_hidden: h.req_u32(key::IOU_HIDDEN)?,
            longest_edge: h.req_u32(key::LONGEST_EDGE)?,
            image_mean: h.req_f32_array(key::IMAGE_MEAN)?,
            image_std: h.req_f32_array(key::IMAGE_STD)?,
        };
        hp.validate()?;
        Ok(hp)
    }

    /// Checks that the file holds every tensor of the table with the right
    /// shape and an allowed type, and nothing else.
    pub fn check_tensors(&self, h: &GgufHeader) -> Result<()> {
        let expected = self.tensor_names();
        check_tensor_set(
            h,
            expected
                .iter()
                .map(|(name, def, i)| (name.as_str(), self.ne(def, *i), def.row.kind)),
        )
    }

    /// Writes the keys of this struct (the converter's half of `from_gguf`).
    pub fn write_keys(&self, w: &mut crate::sys::gguf::GgufWriter) -> Result<()> {
        w.set_str("general.architecture", SEGMENTER_ARCH)?;
        for (k, v) in [
            (key::IMAGE_SIZE, self.image_size),
            (key::PATCH_SIZE, self.patch_size),
            (key::HIDDEN, self.hidden),
            (key::HEADS, self.heads),
            (key::LAYERS, self.layers),
            (key::FF, self.ff),
            (key::WINDOW, self.window),
            (key::OUT, self.out),
            (key::MASK_IN, self.mask_in),
            (key::DEC_LAYERS, self.dec_layers),
            (key::DEC_HEADS, self.dec_heads),
            (key::DEC_FF, self.dec_ff),
            (key::DOWNSAMPLE, self.downsample),
            (key::MULTIMASK, self.multimask),
            (key::IOU_DEPTH, self.iou_depth),
            (key::IOU_HIDDEN, self.iou_hidden),
            (key::LONGEST_EDGE, self.longest_edge),
        ] {
            w.set_u32(k, v)?;
        }
        w.set_f32(key::EPS, self.eps)?;
        w.set_f32(key::DEC_EPS, self.dec_eps)?;
        let global: Vec<i32> = self.global_layers.iter().map(|&l| l as i32).collect();
        w.set_arr_i32(key::GLOBAL_LAYERS, &global)?;
        w.set_arr_f32(key::IMAGE_MEAN, &self.image_mean)?;
        w.set_arr_f32(key::IMAGE_STD, &self.image_std)?;
        w.set_str(key::RESAMPLE, "bilinear")?;
        Ok(())
    }
}
