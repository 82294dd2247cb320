//! `dam synth`: the tiny preset runs end to end through the Session API and
//! llama.cpp's tokenizer; the DAM-3B preset's headers (written as sparse
//! files, no weights) have exactly DAM-3B's keys and shapes.

use std::path::{Path, PathBuf};

use dam::convert::{synth, synth_plan, Preset, SynthOptions};
use dam::ggml::MappedFile;
use dam::gguf_file::{GgufHeader, Value};
use dam::llama::{LlamaModel, ModelParams as LlamaParams};
use dam::weights::VisionHparams;
use dam::GgmlType;
use dam::{DescribeOptions, Model, ModelParams, Region};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("dam-synth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny/cases")
        .join(name)
}

fn opts(seed: u64, threads: usize) -> SynthOptions {
    SynthOptions {
        seed,
        threads,
        ..SynthOptions::default()
    }
}

#[test]
fn tiny_synth_describes_a_region() {
    let tmp = TempDir::new("tiny");
    for ty in [GgmlType::F32, GgmlType::Q8_0] {
        let r = synth(Preset::Tiny, &tmp.0, ty, "t", &opts(7, 0)).unwrap();
        assert_eq!(
            r.llm_path.file_name().unwrap().to_str().unwrap(),
            format!("t-llm-{}.gguf", ty.name())
        );
        assert_eq!(
            r.vision_path.file_name().unwrap().to_str().unwrap(),
            format!("t-vision-{}.gguf", ty.name())
        );
        let model = Model::load(&r.llm_path, &r.vision_path, ModelParams::default()).unwrap();
        assert_eq!(model.llm.n_vocab(), 32000);
        let mut s = model.session().unwrap();
        let rgb = dam::image::load_rgb(fixture("c1_image.png")).unwrap();
        let mask = dam::image::load_mask(fixture("c1_mask.png")).unwrap();
        let image = rgb.view().unwrap();
        let m = mask.view().unwrap();
        let o = DescribeOptions {
            max_new_tokens: 12,
            ..DescribeOptions::greedy()
        };
        let region = Region::Mask(m);
        let cap = s.describe(&image, &region, &o).unwrap();
        assert!(!cap.text.trim().is_empty(), "{ty:?}: empty caption");
        // The synthetic head never predicts <unk>/<s>/</s>: fixed-length output.
        assert_eq!(cap.tokens.len(), 12, "{ty:?}");
        assert!(!cap.stopped_by_eos);
        assert!(cap.tokens.iter().all(|&t| t > 2));
        assert!(cap.frames[0].context_applied);
        // Same request, same text (greedy), and every intermediate finite.
        let frames = [dam::Frame {
            image,
            region: region.clone(),
        }];
        let (cap2, trace) = s.trace(&frames, &o, dam::vision::Detail::Features).unwrap();
        assert_eq!(cap2.text, cap.text);
        for v in [
            &trace.vision.full_features[0],
            &trace.vision.crop_features[0],
            &trace.vision.embeddings[0],
            &trace.generation.first_logits,
        ] {
            assert!(!v.is_empty() && v.iter().all(|x| x.is_finite()));
        }
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let e = rms(&trace.vision.embeddings[0]);
        assert!(e > 0.05 && e < 20.0, "embedding rms {e}");
        // The prompt tokenizes to about one token per word, as with Llama's
        // vocabulary (47 text tokens for DAM's default prompt).
        let text_tokens = trace.prompt_ids.iter().filter(|&&i| i >= 0).count();
        assert!(
            (40..=70).contains(&text_tokens),
            "{text_tokens} prompt tokens"
        );
    }
}

#[test]
fn tiny_synth_is_deterministic_and_threads_do_not_matter() {
    let a = TempDir::new("det-a");
    let b = TempDir::new("det-b");
    let ra = synth(Preset::Tiny, &a.0, GgmlType::F16, "x", &opts(3, 1)).unwrap();
    let rb = synth(Preset::Tiny, &b.0, GgmlType::F16, "x", &opts(3, 3)).unwrap();
    for (p, q) in [
        (&ra.llm_path, &rb.llm_path),
        (&ra.vision_path, &rb.vision_path),
    ] {
        assert!(
            std::fs::read(p).unwrap() == std::fs::read(q).unwrap(),
            "{}",
            p.display()
        );
    }
    let rc = synth(Preset::Tiny, &b.0, GgmlType::F16, "y", &opts(4, 1)).unwrap();
    assert!(std::fs::read(&ra.llm_path).unwrap() != std::fs::read(&rc.llm_path).unwrap());
    assert!(synth(Preset::Tiny, &b.0, GgmlType::Q4_K, "z", &opts(0, 0)).is_err());
    assert!(synth(Preset::Tiny, &b.0, GgmlType::F16, "a/b", &opts(0, 0)).is_err());
}

#[test]
fn llama_cpp_tokenizes_and_detokenizes_with_the_synthetic_vocabulary() {
    let tmp = TempDir::new("vocab");
    let r = synth(Preset::Tiny, &tmp.0, GgmlType::F32, "v", &opts(0, 0)).unwrap();
    let m = LlamaModel::load(
        &r.llm_path,
        &LlamaParams {
            n_gpu_layers: 0,
            use_mmap: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((m.bos(), m.eos()), (Some(1), Some(2)));
    let texts = [
        "Describe the masked region in detail.",
        "A chat between a curious user and an artificial intelligence assistant.",
        "\nUSER: the Zebra's 3 legs, ünïcödé ✓ 日本 {x} ~ tabs\tand  spaces",
    ];
    for text in texts {
        let ids = m.tokenize(text, true, false).unwrap();
        assert_eq!(ids[0], 1, "BOS first");
        assert!(ids[1..].iter().all(|&t| t > 2 && t < 32000));
        let bytes: Vec<u8> = ids[1..].iter().flat_map(|&t| m.token_to_piece(t)).collect();
        let back = String::from_utf8(bytes).unwrap();
        // SentencePiece's dummy prefix adds one leading space.
        assert_eq!(back, format!(" {text}"), "{ids:?}");
    }
    // Words of the prompts are single pieces; other text falls back to bytes.
    let ids = m.tokenize("Describe", false, false).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(m.token_text(ids[0]).unwrap(), "\u{2581}Describe");
    let ids = m.tokenize("\n", false, false).unwrap();
    assert!(ids.contains(&13), "{ids:?}"); // <0x0A>, as in Llama
    let ids = m.tokenize("日", false, false).unwrap();
    assert!(
        ids.iter().filter(|&&t| (3..259).contains(&t)).count() == 3,
        "{ids:?}"
    );
}

fn u32_of(h: &GgufHeader, k: &str) -> u32 {
    match h.get(k) {
        Some(Value::U32(v)) => *v,
        v => panic!("{k}: {v:?}"),
    }
}

fn f32_of(h: &GgufHeader, k: &str) -> f32 {
    match h.get(k) {
        Some(Value::F32(v)) => *v,
        v => panic!("{k}: {v:?}"),
    }
}

#[test]
fn dam_3b_headers_have_dam_3b_keys_and_shapes() {
    let plan = synth_plan(Preset::Dam3b, GgmlType::F16).unwrap();
    // 3.51 B parameters in the files (DAM-3B's 3.56 B less the unused tower
    // layer, cross-attention block, post-layernorm and pooling head).
    let params = plan.llm_params() + plan.vision_params();
    assert!((3_480_000_000..3_560_000_000).contains(&params), "{params}");
    // 32 x (4 x 2560^2 + 3 x 2560 x 6912 + 2 x 2560) + 2 x 32000 x 2560 + 2560.
    assert_eq!(plan.llm_params(), 2_701_560_320);

    let tmp = TempDir::new("dam3b");
    let o = SynthOptions {
        header_only: true,
        ..SynthOptions::default()
    };
    let r = synth(Preset::Dam3b, &tmp.0, GgmlType::F16, "dam-3b", &o).unwrap();
    assert!(r.llm_path.ends_with("dam-3b-llm-f16.gguf"));
    assert!(r.vision_path.ends_with("dam-3b-vision-f16.gguf"));
    // The files have their full size (sparse: no data written).
    assert!(r.llm_bytes > plan.llm_data_bytes() && r.llm_bytes < plan.llm_data_bytes() + (1 << 21));
    assert!(r.vision_bytes > plan.vision_data_bytes());
    assert!(
        (5_250_000_000..5_450_000_000).contains(&r.llm_bytes),
        "{}",
        r.llm_bytes
    );
    assert!(
        (1_550_000_000..1_700_000_000).contains(&r.vision_bytes),
        "{}",
        r.vision_bytes
    );

    // Vision file: DAM-3B's hyper-parameters, the full tensor table.
    let map = MappedFile::open(&r.vision_path).unwrap();
    let h = GgufHeader::parse(map.bytes(), "vision").unwrap();
    let hp = VisionHparams::from_gguf(&h).unwrap();
    hp.check_tensors(&h).unwrap();
    assert_eq!(hp, plan.vision);
    assert_eq!(
        (
            hp.image_size,
            hp.patch_size,
            hp.hidden,
            hp.heads,
            hp.layers,
            hp.ff
        ),
        (384, 14, 1152, 16, 27, 4304)
    );
    assert_eq!(
        (hp.select_layer, hp.used_layers(), hp.ctx_layers),
        (-2, 26, 27)
    );
    assert_eq!(
        (hp.positions(), hp.tokens_per_image(), hp.llm_hidden),
        (729, 196, 2560)
    );
    assert_eq!((hp.eps, hp.ctx_eps, hp.proj_eps), (1e-6, 1e-6, 1e-5));
    assert_eq!(hp.default_query, "Describe the masked region in detail.");
    assert_eq!(h.tensors.len(), 5 + 26 * 16 + 26 * 18 + 6);
    let t = |name: &str| h.tensor(name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(t("v.patch_embd.weight").ne, [14, 14, 3, 1152]);
    assert_eq!(t("v.position_embd.weight").ne, [1152, 729]);
    assert_eq!(t("v.blk.25.ffn_up.weight").ne, [1152, 4304]);
    assert_eq!(t("v.blk.25.ffn_up.weight").ty, GgmlType::F16);
    assert_eq!(t("v.ctx.blk.25.ffn_down.weight").ne, [4304, 1152]);
    assert_eq!(t("v.ctx.blk.25.attn_factor").ne, [1]);
    assert_eq!(t("mm.norm.weight").ne, [4608]);
    assert_eq!(t("mm.fc1.weight").ne, [4608, 2560]);
    assert_eq!(t("mm.fc2.weight").ne, [2560, 2560]);
    assert!(h.tensor("v.blk.26.ln1.weight").is_none());
    assert_eq!(h.req_str("dam.vision.weight_type").unwrap(), "f16");
    assert_eq!(h.req_str("general.name").unwrap(), "dam-3b");
    drop(map);

    // LLM file: DAM-3B's Llama.
    let map = MappedFile::open(&r.llm_path).unwrap();
    let h = GgufHeader::parse(map.bytes(), "llm").unwrap();
    assert_eq!(h.req_str("general.architecture").unwrap(), "llama");
    for (k, v) in [
        ("llama.vocab_size", 32000),
        ("llama.context_length", 4096),
        ("llama.embedding_length", 2560),
        ("llama.block_count", 32),
        ("llama.feed_forward_length", 6912),
        ("llama.rope.dimension_count", 128),
        ("llama.attention.head_count", 20),
        ("llama.attention.head_count_kv", 20),
        ("llama.attention.key_length", 128),
        ("llama.attention.value_length", 128),
        ("tokenizer.ggml.bos_token_id", 1),
        ("tokenizer.ggml.eos_token_id", 2),
        ("tokenizer.ggml.unknown_token_id", 0),
        ("tokenizer.ggml.padding_token_id", 0),
        ("general.file_type", 1),
        ("general.quantization_version", 2),
    ] {
        assert_eq!(u32_of(&h, k), v, "{k}");
    }
    assert_eq!(f32_of(&h, "llama.rope.freq_base"), 10000.0);
    assert_eq!(f32_of(&h, "llama.attention.layer_norm_rms_epsilon"), 1e-5);
    assert_eq!(h.req_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(h.req_str("tokenizer.ggml.pre").unwrap(), "default");
    for k in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.scores",
        "tokenizer.ggml.token_type",
    ] {
        assert_eq!(
            h.get(k).and_then(|v| v.as_array()).map(|a| a.len()),
            Some(32000),
            "{k}"
        );
    }
    assert_eq!(
        h.get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    assert_eq!(
        h.get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    assert_eq!(h.tensors.len(), 3 + 32 * 9);
    let t = |name: &str| h.tensor(name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(t("token_embd.weight").ne, [2560, 32000]);
    assert_eq!(t("output.weight").ne, [2560, 32000]);
    assert_eq!(t("output_norm.weight").ty, GgmlType::F32);
    assert_eq!(t("blk.31.attn_q.weight").ne, [2560, 2560]);
    assert_eq!(t("blk.31.attn_k.weight").ne, [2560, 2560]);
    assert_eq!(t("blk.31.ffn_gate.weight").ne, [2560, 6912]);
    assert_eq!(t("blk.31.ffn_down.weight").ne, [6912, 2560]);
    assert_eq!(t("blk.31.ffn_down.weight").ty, GgmlType::F16);
    for (pt, ht) in plan.llm_tensors.iter().zip(&h.tensors) {
        assert_eq!(
            (&pt.name, pt.ty, &pt.ne, pt.nbytes),
            (&ht.name, ht.ty, &ht.ne, ht.nbytes)
        );
    }
}

#[test]
fn cli_synth_tiny() {
    let tmp = TempDir::new("cli");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dam"))
        .args([
            "synth", "--preset", "tiny", "--type", "q8_0", "--seed", "5", "--outdir",
        ])
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].ends_with("synth-tiny-llm-q8_0.gguf"));
    assert!(lines[1].ends_with("synth-tiny-vision-q8_0.gguf"));
    assert!(Path::new(lines[0]).is_file() && Path::new(lines[1]).is_file());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_dam"))
        .args(["synth", "--preset", "dam-7b", "--outdir"])
        .arg(&tmp.0)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("preset"));
}
