//! Converter and quantizer tests on the fixture checkpoints (tiny, geom):
//! both files parse with the strict reader and pass the loader's checks,
//! f32 tensors equal the checkpoint bit for bit, keys carry the config
//! values, the tokenizer is complete, checkpoint variants (no
//! `vision_model.` prefix, sharded LLM, bf16 weights) convert, bad
//! checkpoints give clear errors, and quantized files stay close to f32.
//!
//! Error metric for lossy types: relative RMS error
//! sqrt(sum (q - x)^2 / sum x^2) per tensor, with these bounds:
//! f16 1e-3, bf16 8e-3, q8_0 1e-2, q6_k 2e-2, q5_x 5e-2, q4_x / iq4_nl 1e-1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dam::convert::{self, doc, ConvertOptions, ConvertReport};
use dam::ggml::dequantize;
use dam::gguf_file::{GgufHeader, Value};
use dam::weights::{key, layer_name, Kind, Part, TensorDef, VisionHparams, VISION_TENSORS};
use dam::GgmlType;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

// ------------------------------------------------------------------ helpers

fn checkpoint(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(model)
        .join("checkpoint")
}

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dam-convert-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A copy of a fixture checkpoint that a test may modify.
fn checkpoint_copy(model: &str, tmp: &TempDir) -> PathBuf {
    let dst = tmp.path().join("checkpoint");
    copy_dir(&checkpoint(model), &dst);
    dst
}

fn read_json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Json) {
    std::fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// (name, dtype, shape, bytes) of every tensor of a safetensors file, sorted.
type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn read_st(p: &Path) -> Vec<RawTensor> {
    let bytes = std::fs::read(p).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<RawTensor> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write_st(p: &Path, tensors: &[RawTensor]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, &None).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// name -> f32 values of a checkpoint folder's single safetensors file.
fn st_values(folder: &Path) -> HashMap<String, Vec<f32>> {
    read_st(&folder.join("model.safetensors"))
        .into_iter()
        .map(|(n, d, _, b)| {
            assert_eq!(d, Dtype::F32);
            (n, f32s(&b))
        })
        .collect()
}

struct Gguf {
    bytes: Vec<u8>,
    h: GgufHeader,
}

impl Gguf {
    fn open(p: &Path) -> Gguf {
        let bytes = std::fs::read(p).unwrap();
        let h = GgufHeader::parse(&bytes, &p.display().to_string()).unwrap();
        Gguf { bytes, h }
    }
    fn raw(&self, name: &str) -> &[u8] {
        let t = self
            .h
            .tensor(name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        &self.bytes[t.offset as usize..(t.offset + t.nbytes) as usize]
    }
    fn values(&self, name: &str) -> Vec<f32> {
        let t = self.h.tensor(name).unwrap();
        let n: u64 = t.ne.iter().product();
        if t.ty == GgmlType::F32 {
            f32s(self.raw(name))
        } else {
            dequantize(t.ty, self.raw(name), n as usize).unwrap()
        }
    }
    fn u32(&self, k: &str) -> u32 {
        self.h.req_u32(k).unwrap()
    }
    fn f32(&self, k: &str) -> f32 {
        self.h.req_f32(k).unwrap()
    }
    fn str(&self, k: &str) -> &str {
        self.h.req_str(k).unwrap()
    }
    fn arr(&self, k: &str) -> &[Value] {
        self.h
            .get(k)
            .and_then(|v| v.as_array())
            .unwrap_or_else(|| panic!("no array {k}"))
    }
}

/// The MLP width a quantized file stores: the next multiple of the block
/// size when that adds at most 1/8 (zero units; see `padded_for`).
fn padded_width(ff: u32, ty: GgmlType) -> u32 {
    let b = ty.block_size() as u32;
    let p = ff.div_ceil(b) * b;
    if ty.is_quantized() && (p - ff) * 8 <= ff {
        p
    } else {
        ff
    }
}

/// The values of a file tensor of shape `ne` in the checkpoint's shape
/// `orig` (1-D or 2-D, each axis at most `ne`'s); every dropped (padding)
/// value must be exactly 0.
fn unpadded(got: &[f32], ne: &[u64], orig: &[u64], name: &str) -> Vec<f32> {
    if ne == orig {
        return got.to_vec();
    }
    let (w, ow) = (ne[0] as usize, orig[0] as usize);
    let orows = orig.get(1).copied().unwrap_or(1) as usize;
    let mut out = Vec::with_capacity(ow * orows);
    for (r, row) in got.chunks(w).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            if r < orows && c < ow {
                out.push(x);
            } else {
                assert_eq!(x, 0.0, "{name}: padding at row {r}, column {c}");
            }
        }
    }
    out
}

fn rel_rms(q: &[f32], x: &[f32]) -> f64 {
    assert_eq!(q.len(), x.len());
    let (mut e, mut s) = (0f64, 0f64);
    for (a, b) in q.iter().zip(x) {
        e += (*a as f64 - *b as f64).powi(2);
        s += (*b as f64).powi(2);
    }
    (e / s.max(1e-30)).sqrt()
}

/// The relative RMS error bound of a stored type (see the file comment).
fn bound(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 1e-3,
        GgmlType::BF16 => 8e-3,
        GgmlType::Q8_0 => 1e-2,
        GgmlType::Q6_K => 2e-2,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 5e-2,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::IQ4_NL => 1e-1,
        t => panic!("no bound for {t:?}"),
    }
}

fn opts() -> ConvertOptions {
    ConvertOptions::default()
}

fn run_convert(ck: &Path, out: &Path, ty: GgmlType, name: &str) -> ConvertReport {
    convert::convert(ck, out, ty, name, &opts())
        .unwrap_or_else(|e| panic!("convert {name} {ty:?}: {e}"))
}

fn convert_err(ck: &Path, tmp: &TempDir) -> String {
    match convert::convert(ck, &tmp.path().join("out"), GgmlType::F16, "bad", &opts()) {
        Ok(_) => panic!("conversion of a bad checkpoint succeeded"),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "multi-line message: {m}");
            // Nothing half-written is left behind.
            if let Ok(rd) = std::fs::read_dir(tmp.path().join("out")) {
                assert_eq!(rd.count(), 0, "files left after a failed conversion");
            }
            m
        }
    }
}

/// (gguf name, checkpoint folder, checkpoint name without prefix, kind) of
/// every vision tensor.
fn vision_table(hp: &VisionHparams) -> Vec<(String, &'static str, String, &'static TensorDef)> {
    let mut out = Vec::new();
    for d in VISION_TENSORS {
        let folder = match d.part {
            Part::Tower | Part::TowerLayer => "vision_tower",
            Part::ContextLayer => "context_provider",
            Part::Projector => "mm_projector",
        };
        for i in 0..hp.count(d.part) {
            out.push((layer_name(d.gguf, i), folder, layer_name(d.hf, i), d));
        }
    }
    out
}

fn vision_hf_name(folder: &str, name: &str) -> String {
    if folder == "vision_tower" {
        format!("vision_model.{name}")
    } else {
        name.to_string()
    }
}

/// (gguf name, hf name) of every LLM tensor for `layers` layers.
fn llm_table(layers: usize) -> Vec<(String, String)> {
    dam::llm::tensors::expand(layers)
        .into_iter()
        .map(|n| (n.gguf, n.hf))
        .collect()
}

// ------------------------------------------------------------ the checks

/// Checks both converted files of `ck` against its configs and tensors.
/// `exact`: the checkpoint's values are representable in `ty` for f32 files
/// (compared bit for bit); otherwise each tensor must be within `bound`.
fn check_converted(ck: &Path, r: &ConvertReport, ty: GgmlType) {
    let top = read_json(&ck.join("config.json"));
    let vcfg = read_json(&ck.join("vision_tower/config.json"));
    let ccfg = read_json(&ck.join("context_provider/config.json"));
    let lcfg = read_json(&ck.join("llm/config.json"));
    let u = |j: &Json, k: &str| j[k].as_u64().unwrap_or_else(|| panic!("{k}")) as u32;
    let f = |j: &Json, k: &str| j[k].as_f64().unwrap() as f32;

    // ---- vision file
    let v = Gguf::open(&r.vision_path);
    assert_eq!(v.h.tensors.len(), r.vision_tensors);
    assert_eq!(
        std::fs::metadata(&r.vision_path).unwrap().len(),
        r.vision_bytes
    );
    let hp = VisionHparams::from_gguf(&v.h).unwrap();
    hp.check_tensors(&v.h).unwrap();
    assert_eq!(hp.image_size, u(&vcfg, "image_size"));
    assert_eq!(hp.patch_size, u(&vcfg, "patch_size"));
    assert_eq!(hp.hidden, u(&vcfg, "hidden_size"));
    assert_eq!(hp.heads, u(&vcfg, "num_attention_heads"));
    assert_eq!(hp.layers, u(&vcfg, "num_hidden_layers"));
    // Quantized files may add zero MLP units and zero matrix input columns
    // up to the block size.
    let (ff, ctx_ff) = (u(&vcfg, "intermediate_size"), u(&ccfg, "intermediate_size"));
    assert_eq!(hp.ff, padded_width(ff, ty));
    assert_eq!(hp.hidden_in, padded_width(hp.hidden, ty));
    assert_eq!(hp.eps, f(&vcfg, "layer_norm_eps"));
    assert_eq!(hp.act, vcfg["hidden_act"].as_str().unwrap());
    assert_eq!(
        hp.select_layer,
        top["mm_vision_select_layer"].as_i64().unwrap() as i32
    );
    assert_eq!(hp.ctx_layers, u(&ccfg, "num_hidden_layers"));
    assert_eq!(hp.ctx_heads, u(&ccfg, "num_attention_heads"));
    assert_eq!(hp.ctx_ff, padded_width(ctx_ff, ty));
    let ck_hp = VisionHparams {
        hidden_in: hp.hidden,
        ff,
        ctx_ff,
        ..hp.clone()
    };
    assert_eq!(hp.ctx_eps, f(&ccfg, "layer_norm_eps"));
    assert_eq!(hp.ctx_masked, ccfg["masked_cross_attn"].as_bool().unwrap());
    assert_eq!(hp.llm_hidden, u(&lcfg, "hidden_size"));
    assert_eq!(hp.max_frames, u(&top, "num_video_frames"));
    assert_eq!((hp.image_mean, hp.image_std), ([0.5; 3], [0.5; 3]));
    assert_eq!(hp.proj_eps, 1e-5);
    assert_eq!(hp.image_prefix, "");
    assert_eq!(v.str(convert::WEIGHT_TYPE_KEY), ty.name());
    assert_eq!(
        v.str(key::DEFAULT_QUERY),
        "Describe the masked region in detail."
    );
    // Exactly the documented keys, in the documented order.
    let documented: Vec<&str> = doc::VISION_KEYS.iter().map(|k| k.key).collect();
    assert_eq!(
        v.h.keys.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        documented
    );

    let mut vals: HashMap<&str, HashMap<String, Vec<f32>>> = HashMap::new();
    for folder in ["vision_tower", "context_provider", "mm_projector"] {
        vals.insert(folder, st_values(&ck.join(folder)));
    }
    for (g, folder, hf, def) in vision_table(&hp) {
        let t = v.h.tensor(&g).unwrap();
        let want_ty = match def.kind {
            Kind::F32 => GgmlType::F32,
            Kind::Matrix => ty.repackable_fallback_for_row(t.ne[0]),
        };
        assert_eq!(t.ty, want_ty, "{g}");
        let orig = &vals[folder][&vision_hf_name(folder, &hf)];
        let got = unpadded(&v.values(&g), &t.ne, &ck_hp.ne(def), &g);
        if t.ty == GgmlType::F32 {
            assert!(got == *orig, "{g}: f32 values differ from the checkpoint");
        } else {
            let e = rel_rms(&got, orig);
            assert!(e <= bound(t.ty), "{g} ({:?}): rel RMS {e}", t.ty);
        }
    }

    // ---- LLM file
    let l = Gguf::open(&r.llm_path);
    assert_eq!(l.h.tensors.len(), r.llm_tensors);
    assert_eq!(std::fs::metadata(&r.llm_path).unwrap().len(), r.llm_bytes);
    assert_eq!(l.str("general.architecture"), "llama");
    let ftype = match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        GgmlType::BF16 => 32,
        _ => unreachable!(),
    };
    assert_eq!(l.u32("general.file_type"), ftype);
    let hidden = u(&lcfg, "hidden_size");
    let heads = u(&lcfg, "num_attention_heads");
    let kv = u(&lcfg, "num_key_value_heads");
    let layers = u(&lcfg, "num_hidden_layers");
    let vocab = u(&lcfg, "vocab_size");
    assert_eq!(
        l.u32("llama.context_length"),
        u(&lcfg, "max_position_embeddings")
    );
    assert_eq!(l.u32("llama.embedding_length"), hidden);
    assert_eq!(l.u32("llama.block_count"), layers);
    assert_eq!(
        l.u32("llama.feed_forward_length"),
        u(&lcfg, "intermediate_size")
    );
    assert_eq!(l.u32("llama.attention.head_count"), heads);
    assert_eq!(l.u32("llama.attention.head_count_kv"), kv);
    assert_eq!(l.u32("llama.rope.dimension_count"), hidden / heads);
    assert_eq!(l.u32("llama.vocab_size"), vocab);
    assert_eq!(l.f32("llama.rope.freq_base"), f(&lcfg, "rope_theta"));
    assert_eq!(
        l.f32("llama.attention.layer_norm_rms_epsilon"),
        f(&lcfg, "rms_norm_eps")
    );
    let documented: Vec<&str> = doc::LLM_KEYS.iter().map(|k| k.key).collect();
    assert_eq!(
        l.h.keys.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        documented
    );
    // Tokenizer.
    assert_eq!(l.str("tokenizer.ggml.model"), "llama");
    let tokens = l.arr("tokenizer.ggml.tokens");
    let scores = l.arr("tokenizer.ggml.scores");
    let ttypes = l.arr("tokenizer.ggml.token_type");
    assert_eq!(
        (tokens.len(), scores.len(), ttypes.len()),
        (vocab as usize, vocab as usize, vocab as usize)
    );
    let tok = |i: usize| tokens[i].as_str().unwrap();
    let tty = |i: usize| ttypes[i].as_i64().unwrap();
    assert_eq!((tok(0), tok(1), tok(2)), ("<unk>", "<s>", "</s>"));
    assert_eq!((tty(0), tty(1), tty(2)), (2, 3, 3));
    assert_eq!((tok(3), tty(3)), ("<0x00>", 6));
    assert_eq!(l.u32("tokenizer.ggml.bos_token_id"), 1);
    assert_eq!(l.u32("tokenizer.ggml.eos_token_id"), 2);
    assert_eq!(l.u32("tokenizer.ggml.unknown_token_id"), 0);
    assert_eq!(l.u32("tokenizer.ggml.padding_token_id"), 0);
    assert_eq!(
        l.h.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        l.h.get("tokenizer.ggml.add_eos_token"),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        l.h.get("tokenizer.ggml.add_space_prefix"),
        Some(&Value::Bool(true))
    );
    // Tensors.
    let lv = st_values(&ck.join("llm"));
    let table = llm_table(layers as usize);
    assert_eq!(l.h.tensors.len(), table.len());
    for (g, h) in table {
        let t = l.h.tensor(&g).unwrap_or_else(|| panic!("no {g}"));
        let is_norm = g.ends_with("norm.weight");
        let want_ty = if is_norm {
            GgmlType::F32
        } else {
            ty.fallback_for_row(t.ne[0])
        };
        assert_eq!(t.ty, want_ty, "{g}");
        let shape = [t.ne.get(1).copied().unwrap_or(1) as usize, t.ne[0] as usize];
        let mut got = l.values(&g);
        if g.ends_with("attn_q.weight") {
            got = convert::unpermute_rows(&got, shape[0], shape[1], heads as usize).unwrap();
        } else if g.ends_with("attn_k.weight") {
            got = convert::unpermute_rows(&got, shape[0], shape[1], kv as usize).unwrap();
        }
        let orig = &lv[&h];
        if t.ty == GgmlType::F32 {
            assert!(got == *orig, "{g}: f32 values differ from the checkpoint");
        } else {
            let e = rel_rms(&got, orig);
            assert!(e <= bound(t.ty), "{g} ({:?}): rel RMS {e}", t.ty);
        }
    }
    // The permutation really moved rows (the check above is not vacuous).
    let q0 = l.values("blk.0.attn_q.weight");
    if ty == GgmlType::F32 {
        assert!(q0 != lv["model.layers.0.self_attn.q_proj.weight"]);
    }
}

#[test]
fn converts_both_fixtures_at_f32_f16_q8_0() {
    for model in ["tiny", "geom"] {
        let ck = checkpoint(model);
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0] {
            let tmp = TempDir::new(&format!("{model}-{}", ty.name()));
            let t0 = Instant::now();
            let r = run_convert(&ck, tmp.path(), ty, model);
            let dt = t0.elapsed();
            eprintln!(
                "{model} {}: {:.3} s, llm {} bytes ({} tensors), vision {} bytes ({} tensors), {} ignored",
                ty.name(),
                dt.as_secs_f64(),
                r.llm_bytes,
                r.llm_tensors,
                r.vision_bytes,
                r.vision_tensors,
                r.ignored.len()
            );
            for fb in &r.fallbacks {
                eprintln!("  fallback: {fb}");
            }
            assert_eq!(
                r.llm_path,
                tmp.path().join(format!("{model}-llm-{}.gguf", ty.name()))
            );
            assert_eq!(
                r.vision_path,
                tmp.path()
                    .join(format!("{model}-vision-{}.gguf", ty.name()))
            );
            check_converted(&ck, &r, ty);
            // The unused tower layer, post_layernorm and the head are dropped.
            assert!(r
                .ignored
                .iter()
                .any(|n| n == "vision_tower/vision_model.post_layernorm.weight"));
            assert!(r
                .ignored
                .iter()
                .any(|n| n.starts_with("vision_tower/vision_model.head.")));
            assert!(r
                .ignored
                .iter()
                .any(|n| n.starts_with("vision_tower/vision_model.encoder.layers.2.")));
            assert!(r
                .ignored
                .iter()
                .any(|n| n.starts_with("context_provider/context_provider_module.layers.2.")));
            assert!(!r
                .ignored
                .iter()
                .any(|n| n.starts_with("llm/") || n.starts_with("mm_projector/")));
            // Only the output files are left (no temporaries).
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
        }
    }
}

#[test]
fn image_prefix_option_is_written() {
    let tmp = TempDir::new("prefix");
    let o = ConvertOptions {
        image_prefix: "Image: ".into(),
        progress: true,
    };
    let r = convert::convert(&checkpoint("tiny"), tmp.path(), GgmlType::F16, "joint", &o).unwrap();
    let v = Gguf::open(&r.vision_path);
    assert_eq!(v.str(key::IMAGE_PREFIX), "Image: ");
    assert_eq!(v.str("general.name"), "joint");
}

#[test]
fn llama_cpp_loads_the_llm_and_tokenizes_like_the_reference() {
    use dam::llama::{LlamaModel, ModelParams};
    let tmp = TempDir::new("llama");
    let r = run_convert(&checkpoint("tiny"), tmp.path(), GgmlType::F32, "tiny");
    let m = LlamaModel::load(&r.llm_path, &ModelParams::default()).unwrap();
    assert_eq!(m.n_vocab(), 1000);
    assert_eq!(m.n_embd(), 64);
    let case =
        read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/cases/c1.json"));
    let prompt = case["prompt"].as_str().unwrap();
    let ids: Vec<i64> = case["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let split = ids.iter().position(|&i| i == -200).unwrap();
    let (before, after) = prompt.split_once("<image>").unwrap();
    let a: Vec<i64> = m
        .tokenize(before, true, false)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let b: Vec<i64> = m
        .tokenize(after, false, false)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    assert_eq!(a, ids[..split]);
    assert_eq!(b, ids[split + 1..]);
    drop(m);
    // The q8_0 conversion and a llama.cpp Q4_K_M re-quantization load too.
    let r8 = run_convert(&checkpoint("tiny"), tmp.path(), GgmlType::Q8_0, "tiny");
    let q4 = tmp.path().join("tiny-llm-q4_k.gguf");
    convert::quantize(&r.llm_path, &q4, GgmlType::Q4_K, 1).unwrap();
    for p in [&r8.llm_path, &q4] {
        let m = LlamaModel::load(p, &ModelParams::default()).unwrap();
        assert_eq!(m.n_vocab(), 1000);
        let a: Vec<i64> = m
            .tokenize(before, true, false)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(a, ids[..split]);
    }
}

// ----------------------------------------------------------- variants

#[test]
fn tower_names_without_vision_model_prefix() {
    let tmp = TempDir::new("noprefix");
    let ck = checkpoint_copy("tiny", &tmp);
    let p = ck.join("vision_tower/model.safetensors");
    let renamed: Vec<RawTensor> = read_st(&p)
        .into_iter()
        .map(|(n, d, s, b)| {
            (
                n.strip_prefix("vision_model.").unwrap().to_string(),
                d,
                s,
                b,
            )
        })
        .collect();
    write_st(&p, &renamed);
    let r = run_convert(&ck, &tmp.path().join("out"), GgmlType::F32, "tiny");
    let v = Gguf::open(&r.vision_path);
    let orig = st_values(&checkpoint("tiny").join("vision_tower"));
    assert!(
        v.values("v.blk.1.attn_q.weight")
            == orig["vision_model.encoder.layers.1.self_attn.q_proj.weight"]
    );
    assert!(
        v.values("v.patch_embd.weight") == orig["vision_model.embeddings.patch_embedding.weight"]
    );
    assert!(r
        .ignored
        .iter()
        .any(|n| n == "vision_tower/post_layernorm.weight"));
}

#[test]
fn sharded_llm_with_index() {
    let tmp = TempDir::new("sharded");
    let ck = checkpoint_copy("tiny", &tmp);
    let dir = ck.join("llm");
    let all = read_st(&dir.join("model.safetensors"));
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (a, b) = all.split_at(all.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_st(&dir.join(names[0]), a);
    write_st(&dir.join(names[1]), b);
    let mut map = serde_json::Map::new();
    for (part, file) in [(a, names[0]), (b, names[1])] {
        for t in part {
            map.insert(t.0.clone(), Json::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    write_json(&dir.join("model.safetensors.index.json"), &index);
    let r = run_convert(&ck, &tmp.path().join("ok"), GgmlType::F32, "tiny");
    // Identical to the conversion of the single-file checkpoint.
    let tmp2 = TempDir::new("sharded-ref");
    let r2 = run_convert(&checkpoint("tiny"), tmp2.path(), GgmlType::F32, "tiny");
    assert_eq!(
        std::fs::read(&r.llm_path).unwrap(),
        std::fs::read(&r2.llm_path).unwrap()
    );

    // An index naming a tensor that is not in its shard is an error.
    let wrong = if a.iter().any(|t| t.0 == "model.norm.weight") {
        names[1]
    } else {
        names[0]
    };
    map.insert("model.norm.weight".into(), Json::String(wrong.into()));
    write_json(
        &dir.join("model.safetensors.index.json"),
        &serde_json::json!({"weight_map": map}),
    );
    let m = convert_err(&ck, &tmp);
    assert!(m.contains("model.norm.weight") && m.contains(wrong), "{m}");
}

#[test]
fn bf16_checkpoint() {
    let tmp = TempDir::new("bf16");
    let ck = checkpoint_copy("tiny", &tmp);
    for folder in ["llm", "vision_tower", "context_provider", "mm_projector"] {
        let p = ck.join(folder).join("model.safetensors");
        let t: Vec<RawTensor> = read_st(&p)
            .into_iter()
            .map(|(n, _, s, b)| {
                let bf: Vec<u8> = f32s(&b)
                    .iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect();
                (n, Dtype::BF16, s, bf)
            })
            .collect();
        write_st(&p, &t);
    }
    let r = run_convert(&ck, &tmp.path().join("out"), GgmlType::F32, "tiny");
    let rounded = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect()
    };
    let v = Gguf::open(&r.vision_path);
    let orig = st_values(&checkpoint("tiny").join("context_provider"));
    let g = v.values("v.ctx.blk.0.attn_v.weight");
    assert!(g == rounded(&orig["context_provider_module.layers.0.cross_attn.v_proj.weight"]));
    let l = Gguf::open(&r.llm_path);
    let lv = st_values(&checkpoint("tiny").join("llm"));
    assert!(l.values("token_embd.weight") == rounded(&lv["model.embed_tokens.weight"]));
    let k = convert::unpermute_rows(&l.values("blk.1.attn_k.weight"), 64, 64, 4).unwrap();
    assert!(k == rounded(&lv["model.layers.1.self_attn.k_proj.weight"]));
    // bf16 -> f16 works too.
    run_convert(&ck, &tmp.path().join("out16"), GgmlType::F16, "tiny");
}

// ------------------------------------------------------------- errors

fn edit_json(p: &Path, f: impl FnOnce(&mut Json)) {
    let mut j = read_json(p);
    f(&mut j);
    write_json(p, &j);
}

#[test]
fn missing_config_file() {
    let tmp = TempDir::new("e-config");
    let ck = checkpoint_copy("tiny", &tmp);
    std::fs::remove_file(ck.join("vision_tower/config.json")).unwrap();
    let m = convert_err(&ck, &tmp);
    assert!(m.contains("vision_tower/config.json"), "{m}");
    let tmp = TempDir::new("e-top");
    let ck = checkpoint_copy("tiny", &tmp);
    std::fs::remove_file(ck.join("config.json")).unwrap();
    let m = convert_err(&ck, &tmp);
    assert!(
        m.contains("config.json") && m.contains("cannot read"),
        "{m}"
    );
    let tmp = TempDir::new("e-tok");
    let ck = checkpoint_copy("tiny", &tmp);
    std::fs::remove_file(ck.join("llm/tokenizer.model")).unwrap();
    let m = convert_err(&ck, &tmp);
    assert!(m.contains("tokenizer.model"), "{m}");
}

#[test]
fn missing_config_key() {
    let tmp = TempDir::new("e-key");
    let ck = checkpoint_copy("tiny", &tmp);
    edit_json(&ck.join("context_provider/config.json"), |j| {
        j.as_object_mut().unwrap().remove("intermediate_size");
    });
    // The top-level context_provider_cfg still has it: falls back.
    run_convert(&ck, &tmp.path().join("ok"), GgmlType::F16, "tiny");
    edit_json(&ck.join("config.json"), |j| {
        j["context_provider_cfg"]
            .as_object_mut()
            .unwrap()
            .remove("intermediate_size");
    });
    let m = convert_err(&ck, &tmp);
    assert!(
        m.contains("context_provider/config.json") && m.contains("intermediate_size"),
        "{m}"
    );
}

#[test]
fn missing_tensor() {
    let tmp = TempDir::new("e-tensor");
    let ck = checkpoint_copy("tiny", &tmp);
    let p = ck.join("context_provider/model.safetensors");
    let t: Vec<RawTensor> = read_st(&p)
        .into_iter()
        .filter(|t| t.0 != "context_provider_module.layers.1.mlp_factor")
        .collect();
    write_st(&p, &t);
    let m = convert_err(&ck, &tmp);
    assert!(
        m.contains("missing tensor context_provider_module.layers.1.mlp_factor"),
        "{m}"
    );

    let tmp = TempDir::new("e-lmhead");
    let ck = checkpoint_copy("tiny", &tmp);
    let p = ck.join("llm/model.safetensors");
    let t: Vec<RawTensor> = read_st(&p)
        .into_iter()
        .filter(|t| t.0 != "lm_head.weight")
        .collect();
    write_st(&p, &t);
    let m = convert_err(&ck, &tmp);
    assert!(m.contains("missing tensor lm_head.weight"), "{m}");
    // With tied embeddings the head may be absent: output.weight is omitted.
    edit_json(&ck.join("llm/config.json"), |j| {
        j["tie_word_embeddings"] = Json::Bool(true)
    });
    let r = run_convert(&ck, &tmp.path().join("tied"), GgmlType::F32, "tiny");
    let l = Gguf::open(&r.llm_path);
    assert!(l.h.tensor("output.weight").is_none());
    assert!(l.h.tensor("token_embd.weight").is_some());
}

#[test]
fn wrong_shape() {
    let tmp = TempDir::new("e-shape");
    let ck = checkpoint_copy("tiny", &tmp);
    let p = ck.join("mm_projector/model.safetensors");
    let t: Vec<RawTensor> = read_st(&p)
        .into_iter()
        .map(|(n, d, s, b)| {
            if n == "layers.2.weight" {
                (n, d, vec![s[1], s[0]], b)
            } else {
                (n, d, s, b)
            }
        })
        .collect();
    write_st(&p, &t);
    let m = convert_err(&ck, &tmp);
    assert!(
        m.contains("layers.2.weight") && m.contains("[192, 64]") && m.contains("[64, 192]"),
        "{m}"
    );

    // A config that disagrees with the weights is caught the same way.
    let tmp = TempDir::new("e-shape-llm");
    let ck = checkpoint_copy("tiny", &tmp);
    edit_json(&ck.join("llm/config.json"), |j| {
        j["intermediate_size"] = Json::from(128)
    });
    let m = convert_err(&ck, &tmp);
    assert!(m.contains("gate_proj") && m.contains("shape"), "{m}");
}

#[test]
fn unsupported_dtype() {
    let tmp = TempDir::new("e-dtype");
    let ck = checkpoint_copy("tiny", &tmp);
    let p = ck.join("vision_tower/model.safetensors");
    let t: Vec<RawTensor> = read_st(&p)
        .into_iter()
        .map(|(n, d, s, b)| {
            if n == "vision_model.embeddings.patch_embedding.bias" {
                let v: Vec<u8> = f32s(&b)
                    .iter()
                    .flat_map(|&x| (x as i64).to_le_bytes())
                    .collect();
                (n, Dtype::I64, s, v)
            } else {
                (n, d, s, b)
            }
        })
        .collect();
    write_st(&p, &t);
    let m = convert_err(&ck, &tmp);
    assert!(
        m.contains("patch_embedding.bias") && m.contains("I64"),
        "{m}"
    );
}

type Edit = Box<dyn Fn(&mut Json)>;

#[test]
fn unsupported_configs() {
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        (
            "config.json",
            "patch",
            Box::new(|j| j["mm_vision_select_feature"] = "patch".into()),
            "mm_vision_select_feature",
        ),
        (
            "config.json",
            "aspect",
            Box::new(|j| j["image_aspect_ratio"] = "pad".into()),
            "image_aspect_ratio",
        ),
        (
            "llm/config.json",
            "rope",
            Box::new(|j| j["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0})),
            "rope_scaling",
        ),
        (
            "llm/config.json",
            "bias",
            Box::new(|j| j["attention_bias"] = true.into()),
            "attention_bias",
        ),
        (
            "llm/config.json",
            "mlpbias",
            Box::new(|j| j["mlp_bias"] = true.into()),
            "mlp_bias",
        ),
        (
            "llm/config.json",
            "act",
            Box::new(|j| j["hidden_act"] = "gelu".into()),
            "hidden_act",
        ),
        (
            "context_provider/config.json",
            "width",
            Box::new(|j| j["hidden_size"] = 64.into()),
            "hidden_size",
        ),
        (
            "context_provider/config.json",
            "type",
            Box::new(|j| j["context_provider_type"] = "other".into()),
            "context provider type",
        ),
        (
            "mm_projector/config.json",
            "proj",
            Box::new(|j| j["mm_projector_type"] = "linear".into()),
            "projector type",
        ),
        (
            "config.json",
            "select",
            Box::new(|j| j["mm_vision_select_layer"] = 7.into()),
            "select layer",
        ),
    ];
    for (file, tag, edit, want) in cases {
        let tmp = TempDir::new(&format!("e-{tag}"));
        let ck = checkpoint_copy("tiny", &tmp);
        edit_json(&ck.join(file), edit);
        let m = convert_err(&ck, &tmp);
        assert!(m.contains(want), "{tag}: {m}");
    }
}

#[test]
fn unsupported_convert_type_and_bad_paths() {
    let tmp = TempDir::new("e-type");
    let e = convert::convert(
        &checkpoint("tiny"),
        tmp.path(),
        GgmlType::Q4_K,
        "x",
        &opts(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("quantize"), "{e}");
    let e = convert::convert(
        &tmp.path().join("nope"),
        tmp.path(),
        GgmlType::F16,
        "x",
        &opts(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}

// ------------------------------------------------------------ quantize

/// Checks a quantized file against its f32 source, tensor by tensor.
/// `want_ne` gives each output shape (the source's, or with zero MLP units
/// added); the padding must be exactly 0 and the rest within the type's
/// bound.
fn check_quantized(
    src: &Gguf,
    out: &Gguf,
    want_ne: impl Fn(&str) -> Vec<u64>,
    want_type: impl Fn(&str, u64, GgmlType) -> bool,
) -> Vec<(String, GgmlType, f64)> {
    assert_eq!(src.h.tensors.len(), out.h.tensors.len());
    let mut rows = Vec::new();
    for t in &src.h.tensors {
        let o = out
            .h
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("no {}", t.name));
        assert_eq!(o.ne, want_ne(&t.name), "{}", t.name);
        assert!(
            want_type(&t.name, o.ne[0], o.ty),
            "{}: type {:?}",
            t.name,
            o.ty
        );
        let x = src.values(&t.name);
        let q = unpadded(&out.values(&t.name), &o.ne, &t.ne, &t.name);
        let e = rel_rms(&q, &x);
        assert!(
            e <= bound(o.ty),
            "{}: {:?} rel RMS {e} > {}",
            t.name,
            o.ty,
            bound(o.ty)
        );
        rows.push((t.name.clone(), o.ty, e));
    }
    rows
}

#[test]
fn quantize_both_files_of_both_fixtures() {
    for model in ["tiny", "geom"] {
        let tmp = TempDir::new(&format!("q-{model}"));
        let r = run_convert(&checkpoint(model), tmp.path(), GgmlType::F32, model);
        let vsrc = Gguf::open(&r.vision_path);
        let lsrc = Gguf::open(&r.llm_path);
        let vhp = VisionHparams::from_gguf(&vsrc.h).unwrap();
        let defs: HashMap<String, &TensorDef> = vhp.tensor_names().into_iter().collect();
        for ty in [GgmlType::Q4_K, GgmlType::Q8_0] {
            // Vision: our path, exact types.
            let vout = tmp
                .path()
                .join(format!("{model}-vision-{}.gguf", ty.name()));
            let t0 = Instant::now();
            let q = convert::quantize(&r.vision_path, &vout, ty, 2).unwrap();
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!(
                (q.arch.as_str(), q.tensors),
                ("dam-vision", vsrc.h.tensors.len())
            );
            let o = Gguf::open(&vout);
            assert_eq!(q.bytes, std::fs::metadata(&vout).unwrap().len());
            let hp = VisionHparams::from_gguf(&o.h).unwrap();
            hp.check_tensors(&o.h).unwrap();
            let want_hp = VisionHparams {
                hidden_in: padded_width(vhp.hidden, ty),
                ff: padded_width(vhp.ff, ty),
                ctx_ff: padded_width(vhp.ctx_ff, ty),
                ..vhp.clone()
            };
            assert_eq!(hp, want_hp);
            assert_eq!(o.str(convert::WEIGHT_TYPE_KEY), ty.name());
            let rows = check_quantized(
                &vsrc,
                &o,
                |name| want_hp.ne(defs[name]),
                |name, ne0, t| match defs[name].kind {
                    Kind::F32 => t == GgmlType::F32,
                    Kind::Matrix => t == ty.repackable_fallback_for_row(ne0),
                },
            );
            for (name, _, _) in rows.iter().filter(|r| r.1 == GgmlType::F32) {
                // Byte-identical up to the zero units (the padding's zeros
                // are checked by check_quantized).
                let (a, b) = (vsrc.raw(name), o.raw(name));
                assert_eq!(a, &b[..a.len()], "{name}: f32 tensor changed");
            }
            let worst = rows.iter().map(|r| r.2).fold(0f64, f64::max);
            eprintln!(
                "{model} vision -> {}: {:.3} s, {} bytes, worst rel RMS {worst:.4}, fallbacks: {:?}",
                ty.name(),
                dt,
                q.bytes,
                q.fallbacks.iter().map(|f| f.to_string()).collect::<Vec<_>>()
            );
            for f in &q.fallbacks {
                assert_eq!(f.used, ty.repackable_fallback_for_row(f.row));
            }
            // Every key is carried over (the widths as checked above).
            assert_eq!(o.h.keys, vsrc.h.keys);
            for k in &vsrc.h.keys {
                if ![
                    convert::WEIGHT_TYPE_KEY,
                    key::HIDDEN_IN,
                    key::FF,
                    key::CTX_FF,
                ]
                .contains(&k.as_str())
                {
                    assert_eq!(o.h.get(k), vsrc.h.get(k), "{k}");
                }
            }

            // LLM: llama.cpp's quantizer and mixtures.
            let lout = tmp.path().join(format!("{model}-llm-{}.gguf", ty.name()));
            let t0 = Instant::now();
            let q = convert::quantize(&r.llm_path, &lout, ty, 2).unwrap();
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!(q.arch, "llama");
            let o = Gguf::open(&lout);
            assert_eq!(
                o.u32("general.file_type"),
                if ty == GgmlType::Q8_0 { 7 } else { 15 }
            );
            assert_eq!(
                o.arr("tokenizer.ggml.tokens"),
                lsrc.arr("tokenizer.ggml.tokens")
            );
            let rows = check_quantized(
                &lsrc,
                &o,
                |name| lsrc.h.tensor(name).unwrap().ne.clone(),
                |name, _, t| {
                    if name.ends_with("norm.weight") {
                        t == GgmlType::F32
                    } else {
                        t != GgmlType::F32
                    }
                },
            );
            let worst = rows.iter().map(|r| r.2).fold(0f64, f64::max);
            let mut used: Vec<&str> = rows.iter().map(|r| r.1.name()).collect();
            used.sort();
            used.dedup();
            eprintln!(
                "{model} llm -> {}: {:.3} s, {} bytes, types {used:?}, worst rel RMS {worst:.4}",
                ty.name(),
                dt,
                q.bytes
            );
        }
        // Requantizing a quantized vision file goes through f32.
        let v8 = tmp.path().join(format!("{model}-vision-q8_0.gguf"));
        let v16 = tmp.path().join(format!("{model}-vision-from-q8.gguf"));
        convert::quantize(&v8, &v16, GgmlType::F16, 1).unwrap();
        let o = Gguf::open(&v16);
        VisionHparams::from_gguf(&o.h)
            .unwrap()
            .check_tensors(&o.h)
            .unwrap();
        let q8 = Gguf::open(&v8);
        for t in &o.h.tensors {
            let e = rel_rms(&o.values(&t.name), &q8.values(&t.name));
            assert!(e <= 1e-3, "{}: {e}", t.name);
        }
    }
}

#[test]
fn quantize_errors() {
    let tmp = TempDir::new("q-err");
    let r = run_convert(&checkpoint("tiny"), tmp.path(), GgmlType::F16, "tiny");
    // Output = input.
    let e = convert::quantize(&r.vision_path, &r.vision_path, GgmlType::Q8_0, 1).unwrap_err();
    assert!(e.to_string().contains("is the input file"), "{e}");
    // Not a GGUF file.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"not a gguf file at all").unwrap();
    let e = convert::quantize(&junk, &tmp.path().join("o.gguf"), GgmlType::Q8_0, 1).unwrap_err();
    assert!(e.to_string().contains("bad magic"), "{e}");
    // Truncated LLM file: caught before llama.cpp sees it.
    let bytes = std::fs::read(&r.llm_path).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let e = convert::quantize(&cut, &tmp.path().join("o.gguf"), GgmlType::Q4_K, 1).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    assert!(!tmp.path().join("o.gguf").exists());
    // Unsupported target type.
    let e = convert::quantize(
        &r.vision_path,
        &tmp.path().join("o.gguf"),
        GgmlType::IQ4_NL,
        1,
    )
    .unwrap_err();
    assert!(e.to_string().contains("iq4_nl"), "{e}");
}
