//! Converter from Hugging Face DAM checkpoints to dam's two GGUF files, and
//! quantizer of those files. The file format is documented in
//! `gguf/README.md` (generated from the same tables; see [`doc`](crate::convert::doc)).
//!
//! - [`convert`] reads a checkpoint folder (the layout of `nvidia/DAM-3B`)
//!   and writes `{name}-llm-{type}.gguf` (a standard llama GGUF with the
//!   tokenizer) and `{name}-vision-{type}.gguf` (architecture `dam-vision`).
//! - [`quantize`](crate::convert::quantize) re-types either file: the LLM through llama.cpp's own
//!   quantizer, the vision file with ggml's quantizers and the shared table.
//!
//! Both stream one tensor at a time from memory mappings: peak memory is a
//! few copies of the largest tensor, never the model.

mod hf;
mod llm;
mod mobilesam;
mod quant;
mod segmenter;
mod spm;
mod synth;
mod vision;

pub mod doc;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::GgmlType;

pub use llm::{llm_key, permute_rows, unpermute_rows, LlmHparams};
pub use quant::{quantize, QuantizeReport, QUANTIZE_TYPES};
pub use segmenter::{convert_segmenter, is_segmenter_checkpoint, SegmenterReport};
pub use spm::{parse as parse_sentencepiece, piece_type, Piece, SpModel};
pub use synth::{
    synth, synth_plan, synth_vocab, Preset, SynthOptions, SynthPlan, SynthReport, SynthTensor,
};
pub use vision::WEIGHT_TYPE_KEY;

/// Options of [`convert`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Text before `<image>` in single-image prompts: "" for DAM-3B, "Image: "
    /// for the joint image/video checkpoint (written as `dam.prompt.image_prefix`).
    pub image_prefix: String,
    /// Show a one-line `[k/n] tensor` progress on stderr (only when stderr is
    /// a terminal).
    pub progress: bool,
}

/// A weight type that did not fit some rows and was replaced (as llama.cpp
/// does): reported once per (requested, used, row length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub requested: GgmlType,
    pub used: GgmlType,
    /// Row length (ggml `ne[0]`) that is not a multiple of the requested block.
    pub row: u64,
    /// How many tensors fell back this way.
    pub tensors: usize,
    /// The first of them.
    pub example: String,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows of {} do not fit {} blocks of {}: {} tensor(s) (e.g. {}) stored as {}",
            self.row,
            self.requested.name(),
            self.requested.block_size(),
            self.tensors,
            self.example,
            self.used.name()
        )
    }
}

/// What [`convert`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertReport {
    pub llm_path: PathBuf,
    pub vision_path: PathBuf,
    pub llm_tensors: usize,
    pub vision_tensors: usize,
    /// File sizes in bytes.
    pub llm_bytes: u64,
    pub vision_bytes: u64,
    /// Checkpoint tensors that DAM does not use (`folder/name`): tower layers
    /// after the selected one, `post_layernorm`, the pooling head, ...
    pub ignored: Vec<String>,
    pub fallbacks: Vec<Fallback>,
}

/// Types [`convert`] writes directly (k-quants and others: [`quantize`]).
pub const CONVERT_TYPES: [GgmlType; 4] =
    [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0];

/// Output file names of [`convert`].
pub fn output_names(name: &str, ty: GgmlType) -> (String, String) {
    (
        format!("{name}-llm-{}.gguf", ty.name()),
        format!("{name}-vision-{}.gguf", ty.name()),
    )
}

/// Converts the Hugging Face DAM checkpoint in `hf_dir` to
/// `outdir/{name}-llm-{ty}.gguf` and `outdir/{name}-vision-{ty}.gguf`.
///
/// `ty` (f32, f16, bf16 or q8_0) applies to the weight matrices (and the
/// LLM's token embedding and output head); norms, biases, patch and position
/// embeddings and the gates stay f32. Every config value and tensor shape is
/// checked before anything is written; each file is written under a
/// temporary name and renamed when complete.
pub fn convert(
    hf_dir: &Path,
    outdir: &Path,
    ty: GgmlType,
    name: &str,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    if !CONVERT_TYPES.contains(&ty) {
        return Err(Error::Convert(format!(
            "convert writes f32, f16, bf16 or q8_0, not {}; convert to f16 or f32, then quantize",
            ty.name()
        )));
    }
    if name.is_empty() || name.contains(['/', '\\']) || name.contains('\0') {
        return Err(Error::InvalidArgument(format!("bad model name {name:?}")));
    }
    let ck = Checkpoint::open(hf_dir)?;
    // Plan both files fully (configs, every tensor's presence, dtype and
    // shape) before writing anything.
    let vplan = vision::plan(&ck, opts, ty)?;
    let lplan = llm::plan(&ck, ty)?;
    std::fs::create_dir_all(outdir).map_err(|e| Error::io(outdir, e))?;
    let (lname, vname) = output_names(name, ty);
    let (llm_path, vision_path) = (outdir.join(lname), outdir.join(vname));
    let mut fallbacks = Vec::new();
    let shards: Vec<(&'static str, hf::Shards)> = CHECKPOINT_FOLDERS
        .iter()
        .map(|&f| Ok((f, ck.shards(f)?)))
        .collect::<Result<_>>()?;
    let src = Folders(
        shards
            .iter()
            .map(|(f, s)| Ok((*f, s.tensors()?)))
            .collect::<Result<_>>()?,
    );
    let vout = write_atomically(&vision_path, |tmp| {
        vision::write(&src, &vplan, name, tmp, opts.progress)
    })?;
    let lout = write_atomically(&llm_path, |tmp| {
        llm::write(&src, &lplan, name, tmp, opts.progress)
    })?;
    merge_fallbacks(&mut fallbacks, &vout.fallbacks);
    merge_fallbacks(&mut fallbacks, &lout.fallbacks);
    let mut ignored = vplan.ignored.clone();
    ignored.extend(lplan.ignored.iter().cloned());
    Ok(ConvertReport {
        llm_path,
        vision_path,
        llm_tensors: lout.tensors,
        vision_tensors: vout.tensors,
        llm_bytes: lout.bytes,
        vision_bytes: vout.bytes,
        ignored,
        fallbacks,
    })
}

// ------------------------------------------------------------------ shared

/// The checkpoint folders the writers read from.
pub(crate) const CHECKPOINT_FOLDERS: [&str; 4] =
    ["llm", "vision_tower", "context_provider", "mm_projector"];

/// Where the file writers take each tensor's values: a checkpoint, or the
/// synthetic generator of [`synth`].
pub(crate) trait TensorSource {
    /// The values of tensor `name` of checkpoint folder `folder` (`llm`,
    /// `vision_tower`, `context_provider`, `mm_projector`) as f32, row-major
    /// in PyTorch order (rows first).
    fn read_f32(&self, folder: &str, name: &str) -> Result<Vec<f32>>;
}

/// The safetensors of a checkpoint's folders, by folder name.
pub(crate) struct Folders<'a>(pub Vec<(&'static str, hf::Tensors<'a>)>);

impl TensorSource for Folders<'_> {
    fn read_f32(&self, folder: &str, name: &str) -> Result<Vec<f32>> {
        self.0
            .iter()
            .find(|(f, _)| *f == folder)
            .ok_or_else(|| Error::Convert(format!("internal: no checkpoint folder {folder}")))?
            .1
            .read_f32(name)
    }
}

/// The checkpoint folder and its top-level config.
pub(crate) struct Checkpoint {
    pub root: PathBuf,
    pub top: serde_json::Value,
}

impl Checkpoint {
    fn open(root: &Path) -> Result<Checkpoint> {
        if !root.is_dir() {
            return Err(Error::Convert(format!(
                "{}: not a directory",
                root.display()
            )));
        }
        let top = hf::read_json(&root.join("config.json"))?;
        if !top.is_object() {
            return Err(Error::Convert(format!(
                "{}/config.json: not a JSON object",
                root.display()
            )));
        }
        Ok(Checkpoint {
            root: root.to_path_buf(),
            top,
        })
    }

    /// The top-level config as a lookup chain of one.
    pub fn top_cfg(&self) -> hf::Cfg {
        hf::Cfg::new("config.json", vec![self.top.clone()])
    }

    /// `folder/config.json` (required), backed by the top-level `{folder}_cfg` dict.
    pub fn sub_cfg(&self, folder: &str) -> Result<hf::Cfg> {
        let own = hf::read_json(&self.root.join(folder).join("config.json"))?;
        let mut layers = vec![own];
        if let Some(d) = self
            .top
            .get(format!("{folder}_cfg"))
            .filter(|d| d.is_object())
        {
            layers.push(d.clone());
        }
        Ok(hf::Cfg::new(format!("{folder}/config.json"), layers))
    }

    pub fn shards(&self, folder: &str) -> Result<hf::Shards> {
        let dir = self.root.join(folder);
        if !dir.is_dir() {
            return Err(Error::Convert(format!(
                "{}: folder {folder}/ is missing",
                self.root.display()
            )));
        }
        hf::Shards::open(&dir)
    }
}

/// What writing one file produced.
pub(crate) struct FileOut {
    pub tensors: usize,
    pub bytes: u64,
    pub fallbacks: Vec<Fallback>,
}

/// Runs `f` on a temporary path next to `path`, then renames it to `path`;
/// on error the temporary file is removed and `path` is left untouched.
pub(crate) fn write_atomically<T>(path: &Path, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let file = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file);
    tmp_name.push(format!(".{}.part", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let r = f(&tmp);
    match r {
        Ok(v) => match std::fs::rename(&tmp, path) {
            Ok(()) => Ok(v),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::io(path, e))
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The stored type of a weight matrix with rows of `row` elements, recording
/// a fallback (chosen by `rule`) when `ty` does not fit.
pub(crate) fn matrix_type(
    ty: GgmlType,
    row: u64,
    rule: fn(GgmlType, u64) -> GgmlType,
    tensor: &str,
    fallbacks: &mut Vec<Fallback>,
) -> GgmlType {
    let used = rule(ty, row);
    if used != ty {
        merge_fallbacks(
            fallbacks,
            &[Fallback {
                requested: ty,
                used,
                row,
                tensors: 1,
                example: tensor.to_string(),
            }],
        );
    }
    used
}

fn merge_fallbacks(into: &mut Vec<Fallback>, from: &[Fallback]) {
    for f in from {
        match into
            .iter_mut()
            .find(|g| g.requested == f.requested && g.used == f.used && g.row == f.row)
        {
            Some(g) => g.tensors += f.tensors,
            None => into.push(f.clone()),
        }
    }
}

/// Converts rows of `row` f32 values to `ty` with ggml's quantizers, split
/// over up to `threads` threads (rows are independent, so the result is
/// identical to a single call).
pub(crate) fn quantize_rows(
    ty: GgmlType,
    data: &[f32],
    row: usize,
    threads: usize,
) -> Result<Vec<u8>> {
    const MIN_PER_THREAD: usize = 1 << 18;
    let rows = data.len().checked_div(row).unwrap_or(0);
    let threads = threads.min(data.len() / MIN_PER_THREAD).min(rows).max(1);
    if threads == 1 || ty == GgmlType::F32 {
        return crate::sys::types::quantize(ty, data, row);
    }
    let per = rows.div_ceil(threads);
    let chunk = per
        .checked_mul(row)
        .ok_or_else(|| Error::Convert("tensor too large".into()))?;
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .chunks(chunk)
            .map(|c| s.spawn(move || crate::sys::types::quantize(ty, c, row)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Backend("quantize thread panicked".into())))
            })
            .collect()
    });
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

/// Threads for the converter's type conversions.
pub(crate) fn default_threads() -> usize {
    crate::model::resolve_threads(0).unwrap_or(1)
}

/// Element count of a ggml shape, checked.
pub(crate) fn numel(ne: &[u64]) -> Result<usize> {
    ne.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| Error::Convert(format!("shape {ne:?} overflows")))
}

/// `data` (ggml shape `from`, 1-D or 2-D) zero-padded to shape `to` (same
/// rank, no axis smaller): the zero MLP units of `VisionHparams::padded_for`.
pub(crate) fn pad_f32(data: Vec<f32>, from: &[u64], to: &[u64]) -> Result<Vec<f32>> {
    if from == to {
        return Ok(data);
    }
    let bad = || Error::Convert(format!("cannot pad a {from:?} tensor to {to:?}"));
    if from.len() != to.len() || from.len() > 2 || from.iter().zip(to).any(|(f, t)| f > t) {
        return Err(bad());
    }
    let (w, nw) = (from[0] as usize, to[0] as usize);
    let rows = from.get(1).copied().unwrap_or(1) as usize;
    if data.len() != w * rows {
        return Err(bad());
    }
    let mut out = vec![0f32; numel(to)?];
    for (r, row) in data.chunks_exact(w.max(1)).enumerate() {
        out[r * nw..r * nw + w].copy_from_slice(row);
    }
    Ok(out)
}

/// One-line `[k/n] tensor` progress on stderr, only when it is a terminal.
pub(crate) struct Progress {
    on: bool,
    n: usize,
    k: usize,
    label: String,
}

impl Progress {
    pub fn new(enabled: bool, n: usize, label: &str) -> Progress {
        Progress {
            on: enabled && std::io::stderr().is_terminal(),
            n,
            k: 0,
            label: label.to_string(),
        }
    }

    pub fn step(&mut self, tensor: &str) {
        self.k += 1;
        if self.on {
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\r\x1b[K{}: [{}/{}] {tensor}",
                self.label, self.k, self.n
            );
            let _ = e.flush();
        }
    }

    pub fn finish(&self) {
        if self.on {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_quantization_equals_one_call() {
        let row = 512;
        let data: Vec<f32> = (0..row * 1500)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        for ty in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K] {
            let one = crate::sys::types::quantize(ty, &data, row).unwrap();
            assert_eq!(quantize_rows(ty, &data, row, 4).unwrap(), one, "{ty:?}");
        }
    }

    #[test]
    fn padding_keeps_values_and_adds_zeros() {
        let m: Vec<f32> = (1..=6).map(|x| x as f32).collect();
        let p = pad_f32(m.clone(), &[3, 2], &[4, 3]).unwrap();
        assert_eq!(p, [1., 2., 3., 0., 4., 5., 6., 0., 0., 0., 0., 0.]);
        assert_eq!(
            pad_f32(m.clone(), &[6], &[8]).unwrap()[..7],
            [1., 2., 3., 4., 5., 6., 0.]
        );
        assert_eq!(pad_f32(m.clone(), &[3, 2], &[3, 2]).unwrap(), m);
        assert!(pad_f32(m.clone(), &[3, 2], &[2, 3]).is_err());
        assert!(pad_f32(m.clone(), &[3, 2], &[8]).is_err());
        assert!(pad_f32(m, &[4, 2], &[4, 3]).is_err());
    }

    #[test]
    fn fallbacks_are_merged() {
        let mut f = Vec::new();
        assert_eq!(
            matrix_type(GgmlType::Q8_0, 48, GgmlType::fallback_for_row, "a", &mut f),
            GgmlType::F16
        );
        assert_eq!(
            matrix_type(GgmlType::Q8_0, 48, GgmlType::fallback_for_row, "b", &mut f),
            GgmlType::F16
        );
        assert_eq!(
            matrix_type(GgmlType::Q8_0, 64, GgmlType::fallback_for_row, "c", &mut f),
            GgmlType::Q8_0
        );
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].tensors, f[0].example.as_str()), (2, "a"));
    }
}
