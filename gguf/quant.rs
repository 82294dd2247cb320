//! Re-typing a converted file: the LLM through llama.cpp's quantizer, the
//! vision file with ggml's quantizers, following the shared tensor table.

use std::path::{Path, PathBuf};

use super::vision::{self, WEIGHT_TYPE_KEY};
use super::{numel, quantize_rows, write_atomically, Fallback};
use crate::error::{Error, Result};
use crate::gguf_file::GgufHeader;
use crate::gguf_file::TensorInfo;
use crate::segmenter::tensors::{SegmenterHparams, SEGMENTER_ARCH};
use crate::sys::gguf::GgufWriter;
use crate::sys::{quantize as llq, types, GgmlType, MappedFile};
use crate::weights::{key, Kind, VisionHparams, VISION_ARCH};

/// What [`quantize`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeReport {
    pub path: PathBuf,
    /// `general.architecture` of the file: "llama", "dam-vision" or
    /// "dam-segmenter".
    pub arch: String,
    pub tensors: usize,
    /// Input and output file sizes in bytes.
    pub input_bytes: u64,
    pub bytes: u64,
    /// Vision and segmenter files only (llama.cpp applies and logs its own
    /// fallbacks).
    pub fallbacks: Vec<Fallback>,
}

/// Types [`quantize`] accepts.
pub const QUANTIZE_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Writes `output`, a copy of the converted GGUF file `input` with its
/// weight matrices stored as `ty`, using `threads` threads for the LLM (0 =
/// all cores).
///
/// The kind of file is read from `general.architecture`: "llama" goes to
/// llama.cpp's `llama_model_quantize` (with its usual mixtures: q4_k means
/// Q4_K_M, q5_k Q5_K_M, q3_k Q3_K_M); "dam-vision" is re-typed here:
/// every key is copied (`dam.vision.weight_type` updated), f32 tensors are
/// copied, matrices are dequantized if needed and quantized to `ty`, or to
/// llama.cpp's fallback type where their rows do not fit `ty`'s blocks;
/// "dam-segmenter" likewise, through the segmenter's tables.
pub fn quantize(
    input: &Path,
    output: &Path,
    ty: GgmlType,
    threads: usize,
) -> Result<QuantizeReport> {
    if !QUANTIZE_TYPES.contains(&ty) {
        return Err(Error::InvalidArgument(format!(
            "quantize does not support type {}",
            ty.name()
        )));
    }
    if same_file(input, output) {
        return Err(Error::InvalidArgument(format!(
            "output {} is the input file",
            output.display()
        )));
    }
    let map = MappedFile::open(input)?;
    let what = input.display().to_string();
    let h = GgufHeader::parse(map.bytes(), &what)?;
    let input_bytes = map.bytes().len() as u64;
    let arch = h.req_str("general.architecture")?.to_string();
    match arch.as_str() {
        "llama" => {
            drop(map);
            write_atomically(output, |tmp| {
                llq::llama_model_quantize(input, tmp, llq::llama_ftype(ty), threads)
            })?;
            let out = MappedFile::open(output)?;
            let oh = GgufHeader::parse(out.bytes(), &output.display().to_string())?;
            Ok(QuantizeReport {
                path: output.to_path_buf(),
                arch,
                tensors: oh.tensors.len(),
                input_bytes,
                bytes: out.bytes().len() as u64,
                fallbacks: Vec::new(),
            })
        }
        VISION_ARCH | SEGMENTER_ARCH => {
            let (tensors, bytes, fallbacks) = write_atomically(output, |tmp| {
                if arch == VISION_ARCH {
                    vision(&map, &h, ty, threads, tmp)
                } else {
                    segmenter(&map, &h, ty, threads, tmp)
                }
            })?;
            Ok(QuantizeReport {
                path: output.to_path_buf(),
                arch,
                tensors,
                input_bytes,
                bytes,
                fallbacks,
            })
        }
        other => Err(Error::InvalidModel(format!(
            "{what}: general.architecture is \"{other}\"; expected \"llama\", \"{VISION_ARCH}\" or \"{SEGMENTER_ARCH}\""
        ))),
    }
}

fn vision(
    map: &MappedFile,
    h: &GgufHeader,
    ty: GgmlType,
    threads: usize,
    path: &Path,
) -> Result<(usize, u64, Vec<Fallback>)> {
    let hp = VisionHparams::from_gguf(h)?;
    hp.check_tensors(h)?;
    // Widths may grow with zeros for `ty` (never shrink).
    vision_as(map, h, (&hp, &hp.padded_for(ty)), ty, threads, path)
}

/// [`vision`] with the written file's hyper-parameters `fhp` (`hp`'s,
/// padded).
fn vision_as(
    map: &MappedFile,
    h: &GgufHeader,
    (hp, fhp): (&VisionHparams, &VisionHparams),
    ty: GgmlType,
    threads: usize,
    path: &Path,
) -> Result<(usize, u64, Vec<Fallback>)> {
    let names = hp.tensor_names();
    let mut w = GgufWriter::with_capacity(names.len())?;
    copy_keys(h, &mut w, |w, key| match key {
        // Written last, as the converter does.
        WEIGHT_TYPE_KEY => Ok(true),
        key::HIDDEN_IN => w.set_u32(key, fhp.hidden_in).map(|_| true),
        key::FF => w.set_u32(key, fhp.ff).map(|_| true),
        key::CTX_FF => w.set_u32(key, fhp.ctx_ff).map(|_| true),
        _ => Ok(false),
    })?;
    if h.get(key::HIDDEN_IN).is_none() {
        // A file written before the key existed.
        w.set_u32(key::HIDDEN_IN, fhp.hidden_in)?;
    }
    w.set_str(WEIGHT_TYPE_KEY, ty.name())?;
    let mut fallbacks = Vec::new();
    let mut plan = Vec::with_capacity(names.len());
    for (name, def) in &names {
        let t = h
            .tensor(name)
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))?;
        // The converter's plan of this entry (the source here is the file
        // itself, whose shapes check_tensors matched to `hp`).
        let p = vision::planned(
            (name.clone(), name.clone(), def),
            hp,
            fhp,
            ty,
            &mut fallbacks,
        );
        w.add_tensor(name, p.ty, &p.ne)?;
        plan.push((t, p.ty, p.ne));
    }
    let size = write_plan(w, path, map, plan, threads)?;
    Ok((names.len(), size, fallbacks))
}

/// Re-types a segmenter file: matrices to `ty` (or the converter's
/// fallback), the rest copied; every key is kept.
fn segmenter(
    map: &MappedFile,
    h: &GgufHeader,
    ty: GgmlType,
    threads: usize,
    path: &Path,
) -> Result<(usize, u64, Vec<Fallback>)> {
    let hp = SegmenterHparams::from_gguf(h)?;
    hp.check_tensors(h)?;
    let names = hp.tensor_names();
    let mut w = GgufWriter::with_capacity(names.len())?;
    copy_keys(h, &mut w, |_, _| Ok(false))?;
    let mut fallbacks = Vec::new();
    let mut plan = Vec::with_capacity(names.len());
    for (name, def, _) in &names {
        let t = h
            .tensor(name)
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))?;
        let out_ty = match def.row.kind {
            Kind::F32 => GgmlType::F32,
            // As the converter: fallbacks that ggml's CPU backend repacks.
            Kind::Matrix => super::matrix_type(
                ty,
                t.ne.first().copied().unwrap_or(1),
                GgmlType::repackable_fallback_for_row,
                name,
                &mut fallbacks,
            ),
        };
        w.add_tensor(name, out_ty, &t.ne)?;
        plan.push((t, out_ty, t.ne.clone()));
    }
    let size = write_plan(w, path, map, plan, threads)?;
    Ok((names.len(), size, fallbacks))
}

/// Copies the keys of `h` in order, except `general.alignment` (the writer
/// always uses the default); `set(w, key)` may write a key itself instead
/// (returning true).
fn copy_keys(
    h: &GgufHeader,
    w: &mut GgufWriter,
    mut set: impl FnMut(&mut GgufWriter, &str) -> Result<bool>,
) -> Result<()> {
    for key in &h.keys {
        if key == "general.alignment" || set(w, key)? {
            continue;
        }
        if let Some(v) = h.get(key) {
            w.set_value(key, v)?;
        }
    }
    Ok(())
}

/// Writes the planned tensors (source, type, shape) of `map` to `path`:
/// copied where nothing changes, else dequantized, zero-padded to the
/// shape and quantized.
fn write_plan(
    w: GgufWriter,
    path: &Path,
    map: &MappedFile,
    plan: Vec<(&TensorInfo, GgmlType, Vec<u64>)>,
    threads: usize,
) -> Result<u64> {
    let threads = if threads == 0 {
        super::default_threads()
    } else {
        threads
    };
    let mut out = w.begin(path)?;
    let bytes = map.bytes();
    for (t, out_ty, ne) in plan {
        let start = usize::try_from(t.offset).map_err(|_| Error::InvalidModel("offset".into()))?;
        let len = usize::try_from(t.nbytes).map_err(|_| Error::InvalidModel("size".into()))?;
        let src = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| Error::InvalidModel(format!("tensor {} is outside the file", t.name)))?;
        if t.ty == out_ty && t.ne == ne {
            out.write_tensor(&t.name, src)?;
            continue;
        }
        let n = numel(&t.ne)?;
        let f = if t.ty == GgmlType::F32 {
            src.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            types::dequantize(t.ty, src, n)?
        };
        let f = super::pad_f32(f, &t.ne, &ne)?;
        let row = usize::try_from(ne.first().copied().unwrap_or(1))
            .map_err(|_| Error::InvalidModel("row".into()))?;
        let q = quantize_rows(out_ty, &f, row, threads)?;
        drop(f);
        out.write_tensor(&t.name, &q)?;
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::{Detail, VisionModel};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// Worst |a - b| / max(1, max |b|).
    fn rel(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        worst / scale
    }

    /// The `geom` fixture model converted at f32 into a new folder `name`.
    fn geom_f32(name: &str) -> (PathBuf, PathBuf) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::temp_dir().join(format!("dam-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = root.join("tests/fixtures/geom/checkpoint");
        let r =
            crate::convert::convert(&ck, &dir, GgmlType::F32, "geom", &Default::default()).unwrap();
        (dir, r.vision_path)
    }

    /// A vision file whose matrices take wider inputs than the tower
    /// (`hidden_in` > `hidden`) gives the unpadded file's results whatever
    /// its extra columns hold: the graph pads the inputs with zeros.
    #[test]
    fn padded_matrix_inputs_change_nothing() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (dir, vision_path) = geom_f32("pad-in");
        let map = MappedFile::open(&vision_path).unwrap();
        let h = GgufHeader::parse(map.bytes(), "geom").unwrap();
        let hp = VisionHparams::from_gguf(&h).unwrap();
        let fhp = VisionHparams {
            hidden_in: hp.hidden + 16,
            ..hp.clone()
        };
        let padded = dir.join("geom-vision-padded.gguf");
        vision_as(&map, &h, (&hp, &fhp), GgmlType::F32, 2, &padded).unwrap();

        // Junk in every extra column: only zero inputs can cancel it.
        let mut bytes = std::fs::read(&padded).unwrap();
        let ph = GgufHeader::parse(&bytes, "padded").unwrap();
        let (c, ci) = (hp.hidden as usize, fhp.hidden_in as usize);
        let mut junk = 0;
        for t in ph.tensors.iter().filter(|t| t.ne[0] == ci as u64) {
            assert_eq!(t.ty, GgmlType::F32, "{}", t.name);
            for row in 0..t.ne[1] as usize {
                for col in c..ci {
                    let at = t.offset as usize + 4 * (row * ci + col);
                    bytes[at..at + 4].copy_from_slice(&(1e3f32 + col as f32).to_le_bytes());
                }
            }
            junk += 1;
        }
        // q, k, v, out, ffn_up of each tower layer and cross-attention block.
        assert_eq!(junk, 10 * hp.used_layers() as usize);
        std::fs::write(&padded, &bytes).unwrap();

        let case = root.join("tests/fixtures/geom/cases");
        let img = crate::image::load_rgb(case.join("c1_image.png")).unwrap();
        let mask = crate::image::load_mask(case.join("c1_mask.png")).unwrap();
        let views =
            crate::preprocess::make_views(&img, &mask, hp.image_size, hp.image_mean, hp.image_std)
                .unwrap();
        assert!(
            !views.focal_is_full,
            "the case must run the context provider"
        );
        let run = |p: &Path| {
            let vm = VisionModel::load(p).unwrap();
            let mut be = vm.backend(2, Arc::new(AtomicBool::new(false))).unwrap();
            vm.encode(&mut be, &[&views], Detail::Features).unwrap()
        };
        let (a, b) = (run(&vision_path), run(&padded));
        assert_eq!(
            VisionModel::load(&padded).unwrap().hp.hidden_in,
            fhp.hidden_in
        );
        for (what, x, y) in [
            ("Z", &a.full_features[0], &b.full_features[0]),
            ("F", &a.crop_features[0], &b.crop_features[0]),
            ("embeddings", &a.embeddings[0], &b.embeddings[0]),
        ] {
            let e = rel(y, x);
            assert!(e <= 1e-5, "{what}: {e:e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A file quantized before the matrices were padded (geom's 144-wide
    /// inputs and 300-wide MLP stay f16 in a q8_0 file) loads, and the load
    /// logs how to get the faster layout.
    #[test]
    fn unpadded_older_file_loads_with_a_hint() {
        use crate::sys::llama::{set_log_hook, LogLevel};
        use std::sync::Mutex;
        let (dir, vision_path) = geom_f32("unpadded");
        let map = MappedFile::open(&vision_path).unwrap();
        let h = GgufHeader::parse(map.bytes(), "geom").unwrap();
        let hp = VisionHparams::from_gguf(&h).unwrap();
        let old = dir.join("geom-vision-q8_0-old.gguf");
        let (_, _, fallbacks) = vision_as(&map, &h, (&hp, &hp), GgmlType::Q8_0, 2, &old).unwrap();
        assert!(!fallbacks.is_empty());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        set_log_hook(Some(Box::new(move |level, text: &str| {
            if level == LogLevel::Info && text.contains("geom-vision-q8_0-old") {
                sink.lock().unwrap().push(text.to_string());
            }
        })));
        let vm = VisionModel::load(&old);
        set_log_hook(None);
        let vm = vm.unwrap();
        assert_eq!((vm.hp.hidden_in, vm.hp.ff), (hp.hidden, hp.ff));
        let lines = lines.lock().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("not padded for q8_0") && l.contains("dam quantize")),
            "{lines:?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
