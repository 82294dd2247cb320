//! The vision file: `VisionHparams` from the checkpoint's configs and the
//! tensors of the shared table (`weights::VISION_TENSORS`).

use std::collections::HashSet;
use std::path::Path;

use super::hf::{self, Tensors};
use super::{matrix_type, Checkpoint, ConvertOptions, FileOut, Progress, TensorSource};
use crate::error::{Error, Result};
use crate::sys::gguf::GgufWriter;
use crate::sys::GgmlType;
use crate::weights::{layer_name, Kind, Part, TensorDef, VisionHparams, VISION_TENSORS};

/// Key of the vision file's weight type (the requested type of the matrices).
pub const WEIGHT_TYPE_KEY: &str = "dam.vision.weight_type";

pub(crate) const DEFAULT_QUERY: &str = "Describe the masked region in detail.";
pub(crate) const DEFAULT_VIDEO_QUERY: &str =
    "Given the video in the form of a sequence of frames above, describe the object in the masked region in the video in detail.";
pub(crate) const VIDEO_PREFIX: &str = "Video: ";
/// nn.LayerNorm's default epsilon (the reference's mlp_downsample projector).
pub(crate) const PROJ_EPS: f32 = 1e-5;

fn conv(m: String) -> Error {
    Error::Convert(m)
}

/// Reads the hyper-parameters from the checkpoint's configs.
pub(crate) fn hparams(ck: &Checkpoint, opts: &ConvertOptions) -> Result<VisionHparams> {
    let top = ck.top_cfg();
    let feat = top.str("mm_vision_select_feature")?;
    if feat != "cls_patch" {
        return Err(conv(format!(
            "config.json: mm_vision_select_feature is \"{feat}\"; only \"cls_patch\" (keep every token) is supported"
        )));
    }
    let aspect = top.str("image_aspect_ratio")?;
    if aspect != "resize" {
        return Err(conv(format!(
            "config.json: image_aspect_ratio is \"{aspect}\"; only \"resize\" is supported"
        )));
    }
    let vt = ck.sub_cfg("vision_tower")?;
    let cp = ck.sub_cfg("context_provider")?;
    let mp = ck.sub_cfg("mm_projector")?;
    let lc = ck.sub_cfg("llm")?;
    let pre = hf::read_json_opt(
        &ck.root
            .join("vision_tower")
            .join("preprocessor_config.json"),
    )?;
    let pre = hf::Cfg::new(
        "vision_tower/preprocessor_config.json",
        pre.into_iter().collect(),
    );

    let image_size = vt.u32("image_size")?;
    let triple = |key: &str| -> Result<[f32; 3]> {
        match pre.get(key) {
            None => Ok([0.5; 3]),
            Some(v) => {
                let bad = || conv(format!("{}: \"{key}\" = {v} is not 3 numbers", pre.what));
                if let Some(x) = v.as_f64() {
                    return Ok([x as f32; 3]);
                }
                let a = v.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
                let mut out = [0f32; 3];
                for (o, x) in out.iter_mut().zip(a) {
                    *o = x.as_f64().filter(|x| x.is_finite()).ok_or_else(bad)? as f32;
                }
                Ok(out)
            }
        }
    };
    if let Some(size) = pre.get("size") {
        let h = size.get("height").and_then(|v| v.as_u64());
        let w = size.get("width").and_then(|v| v.as_u64());
        if let (Some(h), Some(w)) = (h, w) {
            if h != u64::from(image_size) || w != u64::from(image_size) {
                return Err(conv(format!(
                    "{}: size {w}x{h} differs from the tower's image_size {image_size}",
                    pre.what
                )));
            }
        }
    }
    let hidden = vt.u32("hidden_size")?;
    let ctx_hidden = cp.u32("hidden_size")?;
    if ctx_hidden != hidden {
        return Err(conv(format!(
            "context_provider/config.json: hidden_size {ctx_hidden} differs from the vision tower's {hidden}"
        )));
    }
    let hp = VisionHparams {
        image_size,
        patch_size: vt.u32("patch_size")?,
        hidden,
        hidden_in: hidden,
        heads: vt.u32("num_attention_heads")?,
        layers: vt.u32("num_hidden_layers")?,
        ff: vt.u32("intermediate_size")?,
        // SiglipVisionConfig defaults (transformers omits default values).
        eps: vt.f32_or("layer_norm_eps", 1e-6)?,
        act: vt.str_or("hidden_act", "gelu_pytorch_tanh")?.to_string(),
        select_layer: top.i32("mm_vision_select_layer")?,
        mask_channels: vt.u32_or("num_mask_channels", 1)?,
        image_mean: triple("image_mean")?,
        image_std: triple("image_std")?,
        ctx_type: cp.str("context_provider_type")?.to_string(),
        ctx_layers: cp.u32("num_hidden_layers")?,
        ctx_heads: cp.u32("num_attention_heads")?,
        ctx_ff: cp.u32("intermediate_size")?,
        ctx_eps: cp.f32("layer_norm_eps")?,
        ctx_act: cp.str("hidden_act")?.to_string(),
        ctx_masked: cp.bool_or("masked_cross_attn", false)?,
        proj_type: mp.str("mm_projector_type")?.to_string(),
        proj_eps: PROJ_EPS,
        llm_hidden: lc.u32("hidden_size")?,
        conv_mode: "v1".to_string(),
        image_prefix: opts.image_prefix.clone(),
        video_prefix: VIDEO_PREFIX.to_string(),
        default_query: DEFAULT_QUERY.to_string(),
        default_video_query: DEFAULT_VIDEO_QUERY.to_string(),
        max_frames: top.u32_or("num_video_frames", 8)?,
    };
    hp.validate().map_err(|e| match e {
        Error::InvalidModel(m) => conv(format!("unsupported vision configuration: {m}")),
        e => e,
    })?;
    Ok(hp)
}

/// One tensor to write.
pub(crate) struct Planned {
    pub gguf: String,
    /// The name in its checkpoint folder.
    pub hf: String,
    pub part: Part,
    /// ggml order, in the file.
    pub ne: Vec<u64>,
    /// ggml order, in the checkpoint (`ne` may add zero MLP units: see
    /// `VisionHparams::padded_for`).
    pub src_ne: Vec<u64>,
    pub ty: GgmlType,
}

/// The entry `gguf` of the file `fhp` describes, from `hp`'s checkpoint
/// (`fhp = hp.padded_for(ty)`).
pub(crate) fn planned(
    (gguf, hf, def): (String, String, &TensorDef),
    hp: &VisionHparams,
    fhp: &VisionHparams,
    ty: GgmlType,
    fallbacks: &mut Vec<super::Fallback>,
) -> Planned {
    let ne = fhp.ne(def);
    let tty = match def.kind {
        Kind::F32 => GgmlType::F32,
        // Fallbacks that ggml's CPU backend repacks (4-bit k-quants -> q4_0).
        Kind::Matrix => matrix_type(
            ty,
            ne.first().copied().unwrap_or(1),
            GgmlType::repackable_fallback_for_row,
            &gguf,
            fallbacks,
        ),
    };
    Planned {
        gguf,
        hf,
        part: def.part,
        src_ne: hp.ne(def),
        ne,
        ty: tty,
    }
}

pub(crate) struct VisionPlan {
    pub hp: VisionHparams,
    pub ty: GgmlType,
    pub tensors: Vec<Planned>,
    pub ignored: Vec<String>,
    pub fallbacks: Vec<super::Fallback>,
}

pub(crate) fn folder(part: Part) -> &'static str {
    match part {
        Part::Tower | Part::TowerLayer => "vision_tower",
        Part::ContextLayer => "context_provider",
        Part::Projector => "mm_projector",
    }
}

/// The (gguf, table-hf-name, def) list in file order. The gguf names are
/// checked against `hp.tensor_names()`, the one source of the file order.
pub(crate) fn table(hp: &VisionHparams) -> Result<Vec<(String, String, &'static TensorDef)>> {
    let mut out = Vec::new();
    for def in VISION_TENSORS {
        for i in 0..hp.count(def.part) {
            out.push((layer_name(def.gguf, i), layer_name(def.hf, i), def));
        }
    }
    let names = hp.tensor_names();
    let same = names.len() == out.len() && names.iter().zip(&out).all(|((a, _), (b, _, _))| a == b);
    if !same {
        return Err(conv(
            "internal: tensor order differs from VisionHparams::tensor_names".into(),
        ));
    }
    Ok(out)
}

/// Resolves the checkpoint name of a table entry (tower names with or
/// without `vision_model.`).
fn resolve(ts: &Tensors<'_>, part: Part, hf: &str) -> Result<String> {
    let candidates: Vec<String> = match part {
        Part::Tower | Part::TowerLayer => vec![format!("vision_model.{hf}"), hf.to_string()],
        _ => vec![hf.to_string()],
    };
    candidates
        .iter()
        .find(|c| ts.contains(c))
        .cloned()
        .ok_or_else(|| {
            conv(format!(
                "{}/: missing tensor {}",
                folder(part),
                candidates.first().map_or(hf, |s| s.as_str())
            ))
        })
}

/// Checks every configured value and tensor (presence, dtype, shape).
pub(crate) fn plan(ck: &Checkpoint, opts: &ConvertOptions, ty: GgmlType) -> Result<VisionPlan> {
    let hp = hparams(ck, opts)?;
    let fhp = hp.padded_for(ty);
    let mut tensors = Vec::new();
    let mut fallbacks = Vec::new();
    let mut ignored = Vec::new();
    let parts = [
        ("vision_tower", [Part::Tower, Part::TowerLayer].as_slice()),
        ("context_provider", [Part::ContextLayer].as_slice()),
        ("mm_projector", [Part::Projector].as_slice()),
    ];
    let entries = table(&hp)?;
    let mut by_part: Vec<Option<Planned>> = entries.iter().map(|_| None).collect();
    for (fold, ps) in parts {
        let shards = ck.shards(fold)?;
        let ts = shards.tensors()?;
        let mut used = HashSet::new();
        for (k, (gguf, hf_name, def)) in entries.iter().enumerate() {
            if !ps.contains(&def.part) {
                continue;
            }
            let name = resolve(&ts, def.part, hf_name)?;
            let meta = ts.meta(&name)?;
            hf::check_dtype(fold, &name, &meta)?;
            let want: Vec<usize> = def.shape.iter().map(|&d| hp.dim(d) as usize).collect();
            if meta.shape != want {
                return Err(conv(format!(
                    "{fold}/: tensor {name} has shape {:?}, expected {want:?} from the configs",
                    meta.shape
                )));
            }
            used.insert(name.clone());
            if let Some(slot) = by_part.get_mut(k) {
                *slot = Some(planned(
                    (gguf.clone(), name, def),
                    &hp,
                    &fhp,
                    ty,
                    &mut fallbacks,
                ));
            }
        }
        let mut rest: Vec<String> = ts
            .names()
            .filter(|n| !used.contains(*n))
            .map(|n| format!("{fold}/{n}"))
            .collect();
        rest.sort();
        ignored.extend(rest);
    }
    for p in by_part {
        tensors.push(p.ok_or_else(|| conv("internal: unplanned vision tensor".into()))?);
    }
    Ok(VisionPlan {
        hp: fhp,
        ty,
        tensors,
        ignored,
        fallbacks,
    })
}

/// The vision file's header: every key and the tensor table.
pub(crate) fn header(plan: &VisionPlan, name: &str) -> Result<GgufWriter> {
    let mut w = GgufWriter::with_capacity(plan.tensors.len())?;
    plan.hp.write_keys(&mut w)?;
    w.set_str("general.name", name)?;
    w.set_str(WEIGHT_TYPE_KEY, plan.ty.name())?;
    for t in &plan.tensors {
        w.add_tensor(&t.gguf, t.ty, &t.ne)?;
    }
    Ok(w)
}

/// Writes the vision file to `path`, reading each tensor from `src` (its
/// part's checkpoint folder, the plan's checkpoint names).
pub(crate) fn write(
    src: &dyn TensorSource,
    plan: &VisionPlan,
    name: &str,
    path: &Path,
    progress: bool,
) -> Result<FileOut> {
    let mut out = header(plan, name)?.begin(path)?;
    let threads = super::default_threads();
    let mut prog = Progress::new(progress, plan.tensors.len(), "vision");
    for t in &plan.tensors {
        prog.step(&t.gguf);
        let data = super::pad_f32(src.read_f32(folder(t.part), &t.hf)?, &t.src_ne, &t.ne)?;
        let row = usize::try_from(t.ne.first().copied().unwrap_or(1))
            .map_err(|_| conv("row too long".into()))?;
        let bytes = super::quantize_rows(t.ty, &data, row, threads)?;
        drop(data);
        out.write_tensor(&t.gguf, &bytes)?;
    }
    prog.finish();
    let bytes = out.finish()?;
    Ok(FileOut {
        tensors: plan.tensors.len(),
        bytes,
        fallbacks: plan.fallbacks.clone(),
    })
}
