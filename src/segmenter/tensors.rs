//! The segmenter GGUF format (`dam-segmenter`): keys, the tensor table that
//! the converter (`gguf/segmenter.rs`) and the loader share, and the
//! hyper-parameters read from a file (`hparams.rs`).

pub use super::hparams::{
    EncoderHparams, EncoderKind, PixelScale, SegmenterHparams, TinyVitHparams, VitHparams,
};
use crate::weights::{self, Kind};

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
    /// `vit` (SAM) or `tiny_vit` (MobileSAM); absent: `vit`.
    pub const ENCODER: &str = "dam.segmenter.encoder";
    /// `unit` (rescale by 1/255, then normalise: transformers' processor) or
    /// `byte` (normalise the 0..255 values: the official `Sam.preprocess`).
    pub const PIXEL_SCALE: &str = "dam.segmenter.preprocess.pixel_scale";
    pub const TV_WIDTHS: &str = "dam.segmenter.tiny_vit.embedding_lengths";
    pub const TV_DEPTHS: &str = "dam.segmenter.tiny_vit.block_counts";
    pub const TV_HEADS: &str = "dam.segmenter.tiny_vit.attention.head_counts";
    pub const TV_WINDOWS: &str = "dam.segmenter.tiny_vit.window_sizes";
    pub const TV_FF: &str = "dam.segmenter.tiny_vit.feed_forward_lengths";
    pub const TV_LOCAL_CONV: &str = "dam.segmenter.tiny_vit.local_conv_size";
    pub const TV_EPS: &str = "dam.segmenter.tiny_vit.layer_norm_epsilon";
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
    /// Width of the encoder's last stage (the neck's input).
    Enc,
    /// TinyViT: stage 0 width, and half of it (the first patch convolution).
    S0,
    S0Half,
    /// TinyViT: width, MLP (or MBConv) width and heads of the row's stage.
    StageW,
    StageFf,
    StageHeads,
    /// TinyViT: attention-bias offsets of the row's stage (window^2).
    Offsets,
    /// TinyViT: patch merging i's input and output widths.
    MergeIn,
    MergeOut,
    /// TinyViT: the depthwise local convolution's side.
    LocalK,
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
    /// TinyViT: one per MBConv block of stage 0.
    ConvBlock,
    /// TinyViT: one per patch merging (after each stage but the last).
    Merge,
    /// TinyViT: one per attention block of stages 1.., counted across
    /// stages (the checkpoint's `layers.{stage}.blocks.{block}`).
    AttnBlock,
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
    /// TinyViT's `Conv2d_BN` (checkpoint name: its prefix): the convolution
    /// weight with the eval-mode BatchNorm folded in (as `Conv2d_BN.fuse`),
    /// 1x1 ones as matrices.
    BnWeight,
    /// The bias `Conv2d_BN.fuse` makes from the BatchNorm.
    BnBias,
    /// Part k of TinyViT's fused `qkv`, whose rows are per head
    /// [q (D), k (D), v (D)].
    HeadQkv(usize),
    /// A matrix transposed (attention biases [heads, offsets] as
    /// [offsets, heads], so a row lookup gives every head's bias).
    Transpose,
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
use Transform::{BnBias, BnWeight, Conv1x1, ConvT, HeadQkv, Same, Third, Transpose};

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

/// SAM's ViT image encoder (before the neck), in file order (groups of
/// rows; `{i}` is the instance, see [`Part`]).
#[rustfmt::skip]
pub const VIT_TENSORS: &[&[TensorDef]] = &[
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
];

/// MobileSAM's TinyViT image encoder (before the neck); checkpoint names
/// are the official `mobile_sam.pt`'s (a `{i}` of an [`AttnBlock`] row is
/// `{stage}.blocks.{block}`).
#[rustfmt::skip]
pub const TINY_VIT_TENSORS: &[&[TensorDef]] = &[
    &[
        x(t("enc.patch.conv1.weight", "image_encoder.patch_embed.seq.0", Global, &[S0Half, Rgb, Three, Three], F32), BnWeight),
        x(t("enc.patch.conv1.bias", "image_encoder.patch_embed.seq.0", Global, &[S0Half], F32), BnBias),
        x(t("enc.patch.conv2.weight", "image_encoder.patch_embed.seq.2", Global, &[S0, S0Half, Three, Three], F32), BnWeight),
        x(t("enc.patch.conv2.bias", "image_encoder.patch_embed.seq.2", Global, &[S0], F32), BnBias),
    ],
    &[
        x(t("enc.conv.{i}.conv1.weight", "image_encoder.layers.0.blocks.{i}.conv1", ConvBlock, &[StageFf, StageW], Matrix), BnWeight),
        x(t("enc.conv.{i}.conv1.bias", "image_encoder.layers.0.blocks.{i}.conv1", ConvBlock, &[StageFf], F32), BnBias),
        x(t("enc.conv.{i}.conv2.weight", "image_encoder.layers.0.blocks.{i}.conv2", ConvBlock, &[StageFf, One, Three, Three], F32), BnWeight),
        x(t("enc.conv.{i}.conv2.bias", "image_encoder.layers.0.blocks.{i}.conv2", ConvBlock, &[StageFf], F32), BnBias),
        x(t("enc.conv.{i}.conv3.weight", "image_encoder.layers.0.blocks.{i}.conv3", ConvBlock, &[StageW, StageFf], Matrix), BnWeight),
        x(t("enc.conv.{i}.conv3.bias", "image_encoder.layers.0.blocks.{i}.conv3", ConvBlock, &[StageW], F32), BnBias),
    ],
    &[
        x(t("enc.merge.{i}.conv1.weight", "image_encoder.layers.{i}.downsample.conv1", Merge, &[MergeOut, MergeIn], Matrix), BnWeight),
        x(t("enc.merge.{i}.conv1.bias", "image_encoder.layers.{i}.downsample.conv1", Merge, &[MergeOut], F32), BnBias),
        x(t("enc.merge.{i}.conv2.weight", "image_encoder.layers.{i}.downsample.conv2", Merge, &[MergeOut, One, Three, Three], F32), BnWeight),
        x(t("enc.merge.{i}.conv2.bias", "image_encoder.layers.{i}.downsample.conv2", Merge, &[MergeOut], F32), BnBias),
        x(t("enc.merge.{i}.conv3.weight", "image_encoder.layers.{i}.downsample.conv3", Merge, &[MergeOut, MergeOut], Matrix), BnWeight),
        x(t("enc.merge.{i}.conv3.bias", "image_encoder.layers.{i}.downsample.conv3", Merge, &[MergeOut], F32), BnBias),
    ],
    &norm!("enc.blk.{i}.attn_norm", "image_encoder.layers.{i}.attn.norm", AttnBlock, StageW),
    &[
        x(t("enc.blk.{i}.attn_q.weight", "image_encoder.layers.{i}.attn.qkv.weight", AttnBlock, &[StageW, StageW], Matrix), HeadQkv(0)),
        x(t("enc.blk.{i}.attn_q.bias", "image_encoder.layers.{i}.attn.qkv.bias", AttnBlock, &[StageW], F32), HeadQkv(0)),
        x(t("enc.blk.{i}.attn_k.weight", "image_encoder.layers.{i}.attn.qkv.weight", AttnBlock, &[StageW, StageW], Matrix), HeadQkv(1)),
        x(t("enc.blk.{i}.attn_k.bias", "image_encoder.layers.{i}.attn.qkv.bias", AttnBlock, &[StageW], F32), HeadQkv(1)),
        x(t("enc.blk.{i}.attn_v.weight", "image_encoder.layers.{i}.attn.qkv.weight", AttnBlock, &[StageW, StageW], Matrix), HeadQkv(2)),
        x(t("enc.blk.{i}.attn_v.bias", "image_encoder.layers.{i}.attn.qkv.bias", AttnBlock, &[StageW], F32), HeadQkv(2)),
        x(t("enc.blk.{i}.attn_bias", "image_encoder.layers.{i}.attn.attention_biases", AttnBlock, &[Offsets, StageHeads], F32), Transpose),
    ],
    &linear!("enc.blk.{i}.attn_out", "image_encoder.layers.{i}.attn.proj", AttnBlock, StageW, StageW),
    &[
        x(t("enc.blk.{i}.local_conv.weight", "image_encoder.layers.{i}.local_conv", AttnBlock, &[StageW, One, LocalK, LocalK], F32), BnWeight),
        x(t("enc.blk.{i}.local_conv.bias", "image_encoder.layers.{i}.local_conv", AttnBlock, &[StageW], F32), BnBias),
    ],
    &norm!("enc.blk.{i}.ffn_norm", "image_encoder.layers.{i}.mlp.norm", AttnBlock, StageW),
    &linear!("enc.blk.{i}.ffn_up", "image_encoder.layers.{i}.mlp.fc1", AttnBlock, StageFf, StageW),
    &linear!("enc.blk.{i}.ffn_down", "image_encoder.layers.{i}.mlp.fc2", AttnBlock, StageW, StageFf),
];

/// The neck, prompt encoder and mask decoder, which SAM and MobileSAM
/// share (checkpoint names: transformers' `SamModel`; MobileSAM's are
/// [`official_name`]s of them), in file order after the encoder.
#[rustfmt::skip]
pub const HEAD_TENSORS: &[&[TensorDef]] = &[
    &[x(t("enc.neck.conv1.weight", "vision_encoder.neck.conv1.weight", Global, &[Out, Enc], Matrix), Conv1x1)],
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

/// The encoder table of a kind.
pub fn encoder_tensors(kind: EncoderKind) -> &'static [&'static [TensorDef]] {
    match kind {
        EncoderKind::Vit => VIT_TENSORS,
        EncoderKind::TinyVit => TINY_VIT_TENSORS,
    }
}

/// A file's rows in file order: its encoder's, then the shared ones.
pub fn defs(kind: EncoderKind) -> impl Iterator<Item = &'static TensorDef> {
    encoder_tensors(kind)
        .iter()
        .chain(HEAD_TENSORS.iter())
        .flat_map(|g| g.iter())
}

/// The official MobileSAM checkpoint's name of a shared row's tensor
/// (`hf`: its transformers name, `{i}` substituted); `iou_depth` places
/// the IoU head's last layer.
pub fn official_name(hf: &str, iou_depth: u32) -> String {
    // The MLPs: transformers' proj_in / layers.k / proj_out are the
    // official layers.0 / layers.(k+1) / layers.(depth-1).
    for (mlp, depth) in [
        ("mask_decoder.output_hypernetworks_mlps.", 3),
        ("mask_decoder.iou_prediction_head.", iou_depth),
    ] {
        if let Some(rest) = hf.strip_prefix(mlp) {
            let (head, tail) = match rest.split_once("layers.") {
                Some((head, tail)) => {
                    let (k, field) = tail.split_once('.').unwrap_or((tail, ""));
                    let k = k.parse::<u32>().map_or(0, |k| k + 1);
                    (head.to_string(), format!("layers.{k}.{field}"))
                }
                None => {
                    let (head, tail) = rest.split_at(rest.find("proj_").unwrap_or(0));
                    let tail = tail.replacen("proj_in.", "layers.0.", 1).replacen(
                        "proj_out.",
                        &format!("layers.{}.", depth - 1),
                        1,
                    );
                    (head.to_string(), tail)
                }
            };
            return format!("{mlp}{head}{tail}");
        }
    }
    const RENAMES: &[(&str, &str)] = &[
        ("vision_encoder.neck.conv1.", "image_encoder.neck.0."),
        ("vision_encoder.neck.layer_norm1.", "image_encoder.neck.1."),
        ("vision_encoder.neck.conv2.", "image_encoder.neck.2."),
        ("vision_encoder.neck.layer_norm2.", "image_encoder.neck.3."),
        (
            "shared_image_embedding.positional_embedding",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        ),
        (
            "prompt_encoder.point_embed.",
            "prompt_encoder.point_embeddings.",
        ),
        (
            "prompt_encoder.mask_embed.conv1.",
            "prompt_encoder.mask_downscaling.0.",
        ),
        (
            "prompt_encoder.mask_embed.layer_norm1.",
            "prompt_encoder.mask_downscaling.1.",
        ),
        (
            "prompt_encoder.mask_embed.conv2.",
            "prompt_encoder.mask_downscaling.3.",
        ),
        (
            "prompt_encoder.mask_embed.layer_norm2.",
            "prompt_encoder.mask_downscaling.4.",
        ),
        (
            "prompt_encoder.mask_embed.conv3.",
            "prompt_encoder.mask_downscaling.6.",
        ),
        (
            "mask_decoder.upscale_conv1.",
            "mask_decoder.output_upscaling.0.",
        ),
        (
            "mask_decoder.upscale_layer_norm.",
            "mask_decoder.output_upscaling.1.",
        ),
        (
            "mask_decoder.upscale_conv2.",
            "mask_decoder.output_upscaling.3.",
        ),
        (".layer_norm_final_attn.", ".norm_final_attn."),
        (".layer_norm1.", ".norm1."),
        (".layer_norm2.", ".norm2."),
        (".layer_norm3.", ".norm3."),
        (".layer_norm4.", ".norm4."),
    ];
    let mut name = hf.to_string();
    if let Some((from, to)) = RENAMES.iter().find(|(from, _)| name.contains(from)) {
        name = name.replacen(from, to, 1);
    }
    name
}
