//! The segmenter file: a Hugging Face `SamModel` folder (config.json,
//! model.safetensors, optional preprocessor_config.json), or a MobileSAM
//! folder (the official `mobile_sam.pt` state dict as model.safetensors:
//! `python -c "import torch, safetensors.torch as s; s.save_file({k: v.contiguous()
//! for k, v in torch.load('mobile_sam.pt').items()}, 'model.safetensors')"`)
//! to `{name}-segmenter-{type}.gguf` (architecture `dam-segmenter`), through
//! the tables the loader checks (`segmenter::tensors`).

use std::path::{Path, PathBuf};

use super::hf::{self, Cfg, Tensors};
use super::{matrix_type, write_atomically, Fallback, Progress, CONVERT_TYPES};
use crate::error::{Error, Result};
use crate::segmenter::tensors::{
    official_name, EncoderHparams, Part, PixelScale, SegmenterHparams, TensorDef, Transform,
    VitHparams,
};
use crate::sys::gguf::GgufWriter;
use crate::sys::GgmlType;
use crate::weights::{layer_name, Kind};

/// SAM's processor defaults (`SamImageProcessor`): ImageNet statistics.
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// `PILImageResampling.BILINEAR`.
const PIL_BILINEAR: u64 = 2;

/// What [`convert_segmenter`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmenterReport {
    pub path: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
    /// Checkpoint tensors the file does not need.
    pub ignored: Vec<String>,
    pub fallbacks: Vec<Fallback>,
}

fn conv(m: String) -> Error {
    Error::Convert(m)
}

/// Reads the hyper-parameters from config.json and the processor config
/// (long: one checked key per field, SAM's defaults where absent).
fn hparams(dir: &Path) -> Result<SegmenterHparams> {
    let top = hf::read_json(&dir.join("config.json"))?;
    let sub = |k: &str| {
        Cfg::new(
            format!("config.json: {k}"),
            vec![top.get(k).cloned().unwrap_or_default()],
        )
    };
    let (v, p, d) = (
        sub("vision_config"),
        sub("prompt_encoder_config"),
        sub("mask_decoder_config"),
    );
    for (c, key, want) in [
        (&v, "hidden_act", "gelu"),
        (&d, "hidden_act", "relu"),
        (&p, "hidden_act", "gelu"),
    ] {
        let got = c.str_or(key, want)?;
        if got != want {
            return Err(conv(format!(
                "{}: {key} \"{got}\" (only \"{want}\")",
                c.what
            )));
        }
    }
    for key in ["use_abs_pos", "use_rel_pos", "qkv_bias"] {
        if !v.bool_or(key, true)? {
            return Err(conv(format!("{}: {key} false is not supported", v.what)));
        }
    }
    let hidden = v.u32_or("hidden_size", 768)?;
    let mlp_ratio = v.f32_or("mlp_ratio", 4.0)?;
    let ff = match v.get("mlp_dim").filter(|x| !x.is_null()) {
        Some(_) => v.u32("mlp_dim")?,
        None => (hidden as f32 * mlp_ratio) as u32,
    };
    let global_layers = match v.get("global_attn_indexes") {
        None => vec![2, 5, 8, 11],
        Some(a) => a
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                conv(format!(
                    "{}: global_attn_indexes is not a list of layers",
                    v.what
                ))
            })?,
    };
    let image_size = v.u32_or("image_size", 1024)?;
    let pre = processor(dir, image_size)?;
    let out = v.u32_or("output_channels", 256)?;
    for (c, key) in [(&p, "hidden_size"), (&d, "hidden_size")] {
        let x = c.u32_or(key, 256)?;
        if x != out {
            return Err(conv(format!(
                "{}: {key} {x} differs from the neck's output_channels {out}",
                c.what
            )));
        }
    }
    let hp = SegmenterHparams {
        image_size,
        patch_size: v.u32_or("patch_size", 16)?,
        encoder: EncoderHparams::Vit(VitHparams {
            hidden,
            heads: v.u32_or("num_attention_heads", 12)?,
            layers: v.u32_or("num_hidden_layers", 12)?,
            ff,
            eps: v.f32_or("layer_norm_eps", 1e-6)?,
            window: v.u32_or("window_size", 14)?,
            global_layers,
        }),
        out,
        mask_in: p.u32_or("mask_input_channels", 16)?,
        dec_layers: d.u32_or("num_hidden_layers", 2)?,
        dec_heads: d.u32_or("num_attention_heads", 8)?,
        dec_ff: d.u32_or("mlp_dim", 2048)?,
        dec_eps: d.f32_or("layer_norm_eps", 1e-6)?,
        downsample: d.u32_or("attention_downsample_rate", 2)?,
        multimask: d.u32_or("num_multimask_outputs", 3)?,
        iou_depth: d.u32_or("iou_head_depth", 3)?,
        iou_hidden: d.u32_or("iou_head_hidden_dim", 256)?,
        longest_edge: pre.longest_edge,
        pixel_scale: PixelScale::Unit,
        image_mean: pre.mean,
        image_std: pre.std,
    };
    hp.validate().map_err(|e| match e {
        Error::InvalidModel(m) => conv(format!("unsupported SAM configuration: {m}")),
        e => e,
    })?;
    Ok(hp)
}

/// The image processor's values, from preprocessor_config.json
/// (transformers 4) or the "image_processor" dict of processor_config.json
/// (transformers 5); SAM's defaults where absent. Only the processing SAM
/// does is accepted (bilinear resize, 1/255, normalise, pad to the input).
struct Processor {
    longest_edge: u32,
    mean: [f32; 3],
    std: [f32; 3],
}

fn processor(dir: &Path, image_size: u32) -> Result<Processor> {
    // transformers 4 writes preprocessor_config.json; 5 nests the same
    // dict under "image_processor" in processor_config.json.
    let pre = match hf::read_json_opt(&dir.join("preprocessor_config.json"))? {
        Some(p) => Cfg::new("preprocessor_config.json", vec![p]),
        None => {
            let p = hf::read_json_opt(&dir.join("processor_config.json"))?;
            let p = p.and_then(|p| p.get("image_processor").cloned());
            Cfg::new(
                "processor_config.json: image_processor",
                p.into_iter().collect(),
            )
        }
    };
    let side = |key: &str, field: &str| {
        pre.get(key)
            .and_then(|s| s.get(field))
            .and_then(|x| x.as_u64())
    };
    let longest_edge = side("size", "longest_edge").map_or(Ok(1024), |x| {
        u32::try_from(x).map_err(|_| conv("size.longest_edge is too large".into()))
    })?;
    for f in ["height", "width"] {
        if let Some(x) = side("pad_size", f) {
            if x != u64::from(image_size) {
                return Err(conv(format!(
                    "{}: pad_size.{f} {x} differs from image_size {image_size}",
                    pre.what
                )));
            }
        }
    }
    if let Some(r) = pre.get("resample").and_then(|x| x.as_u64()) {
        if r != PIL_BILINEAR {
            return Err(conv(format!(
                "{}: resample {r} (only bilinear, 2)",
                pre.what
            )));
        }
    }
    for key in ["do_resize", "do_rescale", "do_normalize", "do_pad"] {
        if !pre.bool_or(key, true)? {
            return Err(conv(format!("{}: {key} false is not supported", pre.what)));
        }
    }
    let rescale = pre
        .get("rescale_factor")
        .and_then(|x| x.as_f64())
        .unwrap_or(1.0 / 255.0);
    if rescale != 1.0 / 255.0 {
        return Err(conv(format!(
            "{}: rescale_factor {rescale} (only 1/255)",
            pre.what
        )));
    }
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match pre.get(key).and_then(|x| x.as_array()) {
            None => Ok(default),
            Some(a) if a.len() == 3 => {
                let mut out = [0f32; 3];
                for (o, x) in out.iter_mut().zip(a) {
                    *o = x
                        .as_f64()
                        .ok_or_else(|| conv(format!("{}: {key} is not 3 numbers", pre.what)))?
                        as f32;
                }
                Ok(out)
            }
            Some(_) => Err(conv(format!("{}: {key} is not 3 numbers", pre.what))),
        }
    };
    Ok(Processor {
        longest_edge,
        mean: triple("image_mean", IMAGENET_MEAN)?,
        std: triple("image_std", IMAGENET_STD)?,
    })
}

/// `BatchNorm2d`'s default epsilon (TinyViT's `Conv2d_BN`).
const BN_EPS: f32 = 1e-5;

/// The checkpoint tensors (name, shape) a file tensor of shape `file` is
/// made from (`src`: the row's checkpoint name, instance substituted).
fn sources(t: Transform, src: &str, file: &[u64]) -> Vec<(String, Vec<u64>)> {
    let one = |shape: Vec<u64>| vec![(src.to_string(), shape)];
    let bn = |out: u64| {
        ["weight", "bias", "running_mean", "running_var"]
            .map(|f| (format!("{src}.bn.{f}"), vec![out]))
    };
    match t {
        Transform::Same => one(file.to_vec()),
        Transform::Third(_) | Transform::HeadQkv(_) => {
            let mut s = file.to_vec();
            s[0] *= 3;
            one(s)
        }
        Transform::ConvT => one(vec![file[3], file[2], file[0], file[1]]),
        Transform::Conv1x1 => one([file, &[1, 1]].concat()),
        Transform::Transpose => one(vec![file[1], file[0]]),
        Transform::BnWeight => {
            let conv = if file.len() == 2 {
                [file, &[1, 1]].concat()
            } else {
                file.to_vec()
            };
            let mut v = vec![(format!("{src}.c.weight"), conv)];
            v.extend(bn(file[0]));
            v
        }
        Transform::BnBias => bn(file[0]).to_vec(),
    }
}

/// The file tensor's values from its sources' (row-major, in the order of
/// [`sources`]); `heads` splits a per-head fused `qkv`.
fn transform(t: Transform, mut src: Vec<Vec<f32>>, file: &[u64], heads: usize) -> Vec<f32> {
    let first = std::mem::take(&mut src[0]);
    match t {
        Transform::Same | Transform::Conv1x1 => first,
        Transform::Third(k) => {
            let n = first.len() / 3;
            first[k * n..(k + 1) * n].to_vec()
        }
        Transform::HeadQkv(k) => {
            // Rows per head: [q (D), k (D), v (D)].
            let cols = first.len() / (3 * file[0] as usize);
            let d = file[0] as usize / heads.max(1) * cols;
            (0..heads)
                .flat_map(|h| first[(3 * h + k) * d..(3 * h + k + 1) * d].iter().copied())
                .collect()
        }
        Transform::Transpose => {
            let (rows, cols) = (file[0] as usize, file[1] as usize);
            (0..rows * cols)
                .map(|i| first[(i % cols) * rows + i / cols])
                .collect()
        }
        // `Conv2d_BN.fuse`: w * (gamma / sqrt(var + eps)) per output, and
        // beta - mean * gamma / sqrt(var + eps), in f32 as torch.
        Transform::BnWeight => {
            let (gamma, var) = (&src[1], &src[4]);
            let per = first.len() / gamma.len().max(1);
            first
                .iter()
                .enumerate()
                .map(|(i, &w)| w * (gamma[i / per] / (var[i / per] + BN_EPS).sqrt()))
                .collect()
        }
        Transform::BnBias => {
            let (beta, mean, var) = (&src[1], &src[2], &src[3]);
            (0..first.len())
                .map(|o| beta[o] - mean[o] * first[o] / (var[o] + BN_EPS).sqrt())
                .collect()
        }
        Transform::ConvT => {
            // [in, out, kh, kw] -> [kh, kw, out, in]
            let (kh, kw, oc, ic) = (
                file[0] as usize,
                file[1] as usize,
                file[2] as usize,
                file[3] as usize,
            );
            let mut out = vec![0f32; first.len()];
            for i in 0..ic {
                for o in 0..oc {
                    for y in 0..kh {
                        for x in 0..kw {
                            out[((y * kw + x) * oc + o) * ic + i] =
                                first[((i * oc + o) * kh + y) * kw + x];
                        }
                    }
                }
            }
            out
        }
    }
}

/// The checkpoint name of instance `i` of a row: transformers' names for
/// a SAM folder, the official ones for MobileSAM.
fn source_name(def: &TensorDef, i: usize, hp: &SegmenterHparams, official: bool) -> String {
    match (&hp.encoder, def.row.part) {
        (EncoderHparams::TinyVit(tv), Part::AttnBlock) => {
            let (stage, block) = tv.block_stage(i);
            def.row
                .hf
                .replace("{i}", &format!("{stage}.blocks.{block}"))
        }
        _ => {
            let name = layer_name(def.row.hf, i);
            if official && !name.starts_with("image_encoder.") {
                official_name(&name, hp.iou_depth)
            } else {
                name
            }
        }
    }
}

/// Attention heads of instance `i` of a row (for [`Transform::HeadQkv`]).
fn row_heads(def: &TensorDef, i: usize, hp: &SegmenterHparams) -> usize {
    match &hp.encoder {
        EncoderHparams::TinyVit(tv) => tv.heads[tv.block_stage(i).0] as usize,
        EncoderHparams::Vit(v) if def.row.part == Part::EncLayer => v.heads as usize,
        EncoderHparams::Vit(_) => 1,
    }
}

/// Checks each source exists with a readable dtype and its shape.
fn check_sources(ts: &Tensors<'_>, srcs: &[(String, Vec<u64>)]) -> Result<()> {
    for (name, want) in srcs {
        let meta = ts.meta(name)?;
        hf::check_dtype(".", name, &meta)?;
        if meta.shape.iter().map(|&d| d as u64).collect::<Vec<_>>() != *want {
            return Err(conv(format!(
                "tensor {name} has shape {:?}, expected {want:?} from the configuration",
                meta.shape
            )));
        }
    }
    Ok(())
}

/// Whether `dir` holds a segmenter checkpoint `convert_segmenter` reads: a
/// Hugging Face `SamModel` (config.json `model_type` "sam") or MobileSAM's
/// state dict (model.safetensors with TinyViT's tensors, no config.json).
pub fn is_segmenter_checkpoint(dir: &Path) -> bool {
    match std::fs::read(dir.join("config.json")) {
        Ok(b) => {
            serde_json::from_slice::<serde_json::Value>(&b).is_ok_and(|c| c["model_type"] == "sam")
        }
        Err(_) => hf::Shards::open(dir)
            .and_then(|s| Ok(s.tensors()?.contains(super::mobilesam::MARKER)))
            .unwrap_or(false),
    }
}

/// One planned tensor: (gguf name, checkpoint sources, def, instance, type).
type Planned = (String, Vec<String>, &'static TensorDef, usize, GgmlType);

/// Converts the `SamModel` or MobileSAM folder `hf_dir` (MobileSAM when its
/// model.safetensors has TinyViT's tensors) to
/// `outdir/{name}-segmenter-{ty}.gguf`. Every config value and tensor is
/// checked before anything is written.
pub fn convert_segmenter(
    hf_dir: &Path,
    outdir: &Path,
    ty: GgmlType,
    name: &str,
    progress: bool,
) -> Result<SegmenterReport> {
    if !CONVERT_TYPES.contains(&ty) {
        return Err(conv(format!(
            "convert writes f32, f16, bf16 or q8_0, not {}",
            ty.name()
        )));
    }
    if name.is_empty() || name.contains(['/', '\\', '\0']) {
        return Err(Error::InvalidArgument(format!("bad model name {name:?}")));
    }
    let shards = hf::Shards::open(hf_dir)?;
    let ts = shards.tensors()?;
    let official = ts.contains(super::mobilesam::MARKER);
    let hp = if official {
        super::mobilesam::hparams(hf_dir, &ts)?
    } else {
        hparams(hf_dir)?
    };
    let mut fallbacks = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    for (gguf, def, i) in hp.tensor_names() {
        let file = hp.shape(def, i);
        let src = source_name(def, i, &hp, official);
        let srcs = sources(def.transform, &src, &file);
        check_sources(&ts, &srcs)?;
        let tty = match def.row.kind {
            Kind::F32 => GgmlType::F32,
            // As the vision file: fallbacks that ggml's CPU backend repacks.
            Kind::Matrix => matrix_type(
                ty,
                file.last().copied().unwrap_or(1),
                GgmlType::repackable_fallback_for_row,
                &gguf,
                &mut fallbacks,
            ),
        };
        planned.push((gguf, srcs.into_iter().map(|s| s.0).collect(), def, i, tty));
    }
    let used: std::collections::HashSet<&str> = planned
        .iter()
        .flat_map(|p| p.1.iter().map(|s| s.as_str()))
        .collect();
    let mut ignored: Vec<String> = ts
        .names()
        .filter(|n| !used.contains(n.as_str()))
        .cloned()
        .collect();
    ignored.sort();

    std::fs::create_dir_all(outdir).map_err(|e| Error::io(outdir, e))?;
    let path = outdir.join(format!("{name}-segmenter-{}.gguf", ty.name()));
    let bytes = write_atomically(&path, |tmp| {
        let mut w = GgufWriter::with_capacity(planned.len())?;
        hp.write_keys(&mut w)?;
        w.set_str("general.name", name)?;
        for (gguf, _, def, i, tty) in &planned {
            w.add_tensor(gguf, *tty, &hp.ne(def, *i))?;
        }
        let mut out = w.begin(tmp)?;
        let mut prog = Progress::new(progress, planned.len(), "segmenter");
        for (gguf, srcs, def, i, tty) in &planned {
            prog.step(gguf);
            let file = hp.shape(def, *i);
            let values = srcs
                .iter()
                .map(|s| ts.read_f32(s))
                .collect::<Result<Vec<_>>>()?;
            let data = transform(def.transform, values, &file, row_heads(def, *i, &hp));
            let row = file.last().copied().unwrap_or(1) as usize;
            out.write_tensor(
                gguf,
                &super::quantize_rows(*tty, &data, row, super::default_threads())?,
            )?;
        }
        prog.finish();
        out.finish()
    })?;
    Ok(SegmenterReport {
        path,
        tensors: planned.len(),
        bytes,
        ignored,
        fallbacks,
    })
}
