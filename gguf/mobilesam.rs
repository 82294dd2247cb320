//! MobileSAM's hyper-parameters, read from the shapes of its official
//! state dict (`mobile_sam.pt` as `model.safetensors`, its key names):
//! the checkpoint holds no config, so what shapes cannot tell comes from
//! the official `build_sam_vit_t` (a 1024 input, 8 decoder heads,
//! `nn.LayerNorm`'s epsilon, the predictor's 0..255 normalisation), or
//! from an optional `mobilesam.json` beside it (`image_size`,
//! `decoder_heads`).

use std::path::Path;

use super::hf::{self, Tensors};
use crate::error::{Error, Result};
use crate::segmenter::tensors::{EncoderHparams, PixelScale, SegmenterHparams, TinyVitHparams};

/// A tensor every MobileSAM checkpoint has (and a `SamModel` has not).
pub(crate) const MARKER: &str = "image_encoder.patch_embed.seq.0.c.weight";
/// `Sam`'s default pixel statistics (on the 0..255 scale).
const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];
/// `nn.LayerNorm`'s default epsilon (TinyViT's and the decoder's norms).
const TORCH_LN_EPS: f32 = 1e-5;

fn conv(m: String) -> Error {
    Error::Convert(m)
}

/// Reads the sizes from the tensors' shapes (and the optional sidecar).
pub(crate) fn hparams(dir: &Path, ts: &Tensors<'_>) -> Result<SegmenterHparams> {
    let side = hf::read_json_opt(&dir.join("mobilesam.json"))?;
    let side = hf::Cfg::new("mobilesam.json", side.into_iter().collect());
    let image_size = side.u32_or("image_size", 1024)?;
    let dec_heads = side.u32_or("decoder_heads", 8)?;
    let dim = |name: &str, axis: usize| -> Result<u32> {
        let m = ts.meta(name)?;
        m.shape
            .get(axis)
            .and_then(|&d| u32::try_from(d).ok())
            .ok_or_else(|| conv(format!("tensor {name} has shape {:?}", m.shape)))
    };
    let count = |f: &dyn Fn(usize) -> String| (0..).take_while(|&i| ts.contains(&f(i))).count();

    let stage0 = |b: usize| format!("image_encoder.layers.0.blocks.{b}.conv1.c.weight");
    let mut tv = TinyVitHparams {
        widths: vec![dim("image_encoder.patch_embed.seq.2.c.weight", 0)?],
        depths: vec![count(&stage0) as u32],
        heads: vec![0],
        windows: vec![0],
        ff: vec![dim(&stage0(0), 0)?],
        local_conv: dim("image_encoder.layers.1.blocks.0.local_conv.c.weight", 2)?,
        eps: TORCH_LN_EPS,
    };
    for s in 1.. {
        let blk = |b: usize| format!("image_encoder.layers.{s}.blocks.{b}.attn.qkv.weight");
        if !ts.contains(&blk(0)) {
            break;
        }
        let p = format!("image_encoder.layers.{s}.blocks.0");
        let offsets = dim(&format!("{p}.attn.attention_biases"), 1)?;
        let window = (1..=offsets).find(|w| w * w >= offsets).unwrap_or(0);
        if window * window != offsets {
            return Err(conv(format!(
                "{p}: {offsets} attention-bias offsets are not a square window"
            )));
        }
        tv.widths.push(dim(&format!("{p}.attn.norm.weight"), 0)?);
        tv.depths.push(count(&blk) as u32);
        tv.heads
            .push(dim(&format!("{p}.attn.attention_biases"), 0)?);
        tv.windows.push(window);
        tv.ff.push(dim(&format!("{p}.mlp.fc1.weight"), 0)?);
    }
    let out = dim("image_encoder.neck.0.weight", 0)?;
    let dec = "mask_decoder.transformer.layers";
    let inner = dim(
        &format!("{dec}.0.cross_attn_token_to_image.q_proj.weight"),
        0,
    )?;
    let hp = SegmenterHparams {
        image_size,
        patch_size: tv.total_stride(),
        encoder: EncoderHparams::TinyVit(tv),
        out,
        mask_in: dim("prompt_encoder.mask_downscaling.3.weight", 0)?,
        dec_layers: count(&|i| format!("{dec}.{i}.self_attn.q_proj.weight")) as u32,
        dec_heads,
        dec_ff: dim(&format!("{dec}.0.mlp.lin1.weight"), 0)?,
        dec_eps: TORCH_LN_EPS,
        downsample: out / inner.max(1),
        multimask: dim("mask_decoder.mask_tokens.weight", 0)?.saturating_sub(1),
        iou_depth: count(&|i| format!("mask_decoder.iou_prediction_head.layers.{i}.weight")) as u32,
        iou_hidden: dim("mask_decoder.iou_prediction_head.layers.0.weight", 0)?,
        longest_edge: image_size,
        pixel_scale: PixelScale::Byte,
        image_mean: PIXEL_MEAN,
        image_std: PIXEL_STD,
    };
    hp.validate().map_err(|e| match e {
        Error::InvalidModel(m) => conv(format!("unsupported MobileSAM checkpoint: {m}")),
        e => e,
    })?;
    Ok(hp)
}
