//! LLM tests against the golden fixtures (tests/fixtures/{tiny,geom}):
//! prompt tokenisation, prefill from the reference's spliced embeddings,
//! prefill from text pieces + image rows, greedy generation, logits,
//! decoded text, streaming, cancellation, f16 agreement.
//!
//! Each fixture checkpoint is converted once per test process (f32 and
//! f16) with `dam::convert::convert` into a temporary folder.
//!
//! Run with `cargo test --release --test llm -- --nocapture` to see the
//! per-case report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use dam::convert::{convert, ConvertOptions};
use dam::llama::{ContextParams, FlashAttn, KvType, LlamaContext, LlamaModel, ModelParams};
use dam::llm::prompt::{DEFAULT_QUERY, DEFAULT_VIDEO_QUERY, VIDEO_PREFIX};
use dam::llm::{
    conversation, generate, generate_from_embeddings, prompt_ids, tokenize_prompt, user_text,
    GenerateOptions, Generation, LengthControl, PromptPiece, StopReason, TextStream,
};
use dam::Error;
use dam::GgmlType;

const TINY_CASES: &[&str] = &["c1", "c1_len20", "c2", "c3", "c4", "c5", "v1"];
const GEOM_CASES: &[&str] = &["c1", "c1_len20", "c2", "c3", "c4"];

/// first_logits tolerance (max abs error; logits are O(10)).
const FIRST_LOGITS_TOL: f32 = 1e-3;
/// Tolerance for every row of step_logits (KV-cached decode steps).
const STEP_LOGITS_TOL: f32 = 5e-4;
const MAX_NEW: usize = 24;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases(model: &str) -> &'static [&'static str] {
    if model == "tiny" {
        TINY_CASES
    } else {
        GEOM_CASES
    }
}

// ---------------------------------------------------------------- fixtures

struct Case {
    model: &'static str,
    name: &'static str,
    json: serde_json::Value,
    /// [L, H]
    embeds: Vec<f32>,
    h: usize,
    first_logits: Vec<f32>,
    /// [n, V]
    step_logits: Vec<Vec<f32>>,
    prompt_ids: Vec<i64>,
    output_ids: Vec<i32>,
}

impl Case {
    fn l(&self) -> usize {
        self.embeds.len() / self.h
    }
    fn query(&self) -> &str {
        self.json["query"].as_str().expect("query")
    }
    fn prompt(&self) -> &str {
        self.json["prompt"].as_str().expect("prompt")
    }
    fn text(&self) -> &str {
        self.json["generation"]["text"].as_str().expect("text")
    }
    fn rows_per_image(&self) -> usize {
        self.json["llm_tokens_per_image"].as_u64().expect("T") as usize
    }
    fn num_frames(&self) -> usize {
        self.json["num_frames"].as_u64().expect("num_frames") as usize
    }
    /// Image rows sliced out of `embeds` at the -200 positions.
    fn image_rows(&self) -> Vec<&[f32]> {
        let t = self.rows_per_image();
        let mut row = 0;
        let mut out = Vec::new();
        for &id in &self.prompt_ids {
            if id == -200 {
                out.push(&self.embeds[row * self.h..(row + t) * self.h]);
                row += t;
            } else {
                row += 1;
            }
        }
        assert_eq!(
            row,
            self.l(),
            "{}/{}: prompt ids do not span L",
            self.model,
            self.name
        );
        out
    }
    fn label(&self) -> String {
        format!("{}/{}", self.model, self.name)
    }
}

fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    assert_eq!(view.dtype(), safetensors::Dtype::F32);
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(view: &safetensors::tensor::TensorView<'_>) -> Vec<i64> {
    assert_eq!(view.dtype(), safetensors::Dtype::I64);
    view.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect()
}

fn load_case(model: &'static str, name: &'static str) -> Case {
    let dir = fixtures().join(model).join("cases");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!("{name}.json"))).expect("case json"),
    )
    .expect("parse case json");
    let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).expect("case tensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse safetensors");
    let e = st.tensor("llm_inputs_embeds").expect("llm_inputs_embeds");
    let h = e.shape()[1];
    let embeds = f32s(&e);
    let first_logits = f32s(&st.tensor("first_logits").expect("first_logits"));
    let sl = st.tensor("step_logits").expect("step_logits");
    let v = sl.shape()[1];
    let step_logits = f32s(&sl).chunks(v).map(|r| r.to_vec()).collect();
    let prompt_ids = i64s(&st.tensor("prompt_ids").expect("prompt_ids"));
    let output_ids = i64s(&st.tensor("output_ids").expect("output_ids"))
        .into_iter()
        .map(|x| x as i32)
        .collect::<Vec<_>>();
    let json_ids: Vec<i64> = json["prompt_ids"]
        .as_array()
        .expect("prompt_ids")
        .iter()
        .map(|x| x.as_i64().expect("id"))
        .collect();
    assert_eq!(
        json_ids, prompt_ids,
        "{model}/{name}: json vs tensor prompt_ids"
    );
    Case {
        model,
        name,
        json,
        embeds,
        h,
        first_logits,
        step_logits,
        prompt_ids,
        output_ids,
    }
}

// ---------------------------------------------------------------- models

struct Models {
    f32: Arc<LlamaModel>,
    f16: Arc<LlamaModel>,
}

fn convert_llm(model: &str, ty: GgmlType) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "llm-test-{}-{model}-{}",
        std::process::id(),
        ty.name()
    ));
    std::fs::create_dir_all(&out).expect("temp dir");
    let ck = fixtures().join(model).join("checkpoint");
    let report = convert(&ck, &out, ty, model, &ConvertOptions::default())
        .unwrap_or_else(|e| panic!("converting {model} at {}: {e}", ty.name()));
    assert!(
        report.llm_path.is_file(),
        "{} missing",
        report.llm_path.display()
    );
    report.llm_path
}

fn models(model: &str) -> &'static Models {
    static TINY: OnceLock<Models> = OnceLock::new();
    static GEOM: OnceLock<Models> = OnceLock::new();
    let cell = if model == "tiny" { &TINY } else { &GEOM };
    cell.get_or_init(|| {
        let load = |ty| {
            let path = convert_llm(model, ty);
            let m = LlamaModel::load(&path, &ModelParams::default()).expect("load gguf");
            // The model is in memory (or mapped, which survives unlinking on
            // Unix): remove the temporary files; failure to do so is harmless.
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
            Arc::new(m)
        };
        Models {
            f32: load(GgmlType::F32),
            f16: load(GgmlType::F16),
        }
    })
}

/// f32 KV cache, flash attention off, small batches (prefill is chunked).
fn exact_ctx(model: &Arc<LlamaModel>) -> LlamaContext {
    LlamaContext::new(
        model,
        &ContextParams {
            n_ctx: 512,
            n_batch: 64,
            n_threads: 2,
            type_k: KvType::F32,
            type_v: KvType::F32,
            flash_attn: FlashAttn::Off,
            n_seq_max: 1,
            gpu_offload: true,
        },
    )
    .expect("context")
}

fn greedy() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: MAX_NEW,
        temperature: 0.0,
        collect_logits: true,
        ..Default::default()
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Max step-logits error over the rows both runs have.
fn step_err(gen: &Generation, case: &Case) -> f32 {
    gen.step_logits
        .iter()
        .zip(&case.step_logits)
        .map(|(a, b)| max_abs(a, b))
        .fold(0.0, f32::max)
}

fn no_stream() -> impl FnMut(&str) -> bool {
    |_: &str| true
}

// ---------------------------------------------------------------- (a) prompt

#[test]
fn prompt_tokens_match_fixtures() {
    for model in ["tiny", "geom"] {
        let m = &models(model).f32;
        for &name in cases(model) {
            let case = load_case(model, name);
            // The user text from the plain query.
            let rebuilt = match name {
                "v1" => user_text("", VIDEO_PREFIX, case.num_frames(), DEFAULT_VIDEO_QUERY),
                "c1_len20" => user_text(
                    "",
                    VIDEO_PREFIX,
                    case.num_frames(),
                    &LengthControl::AboutWords(20).apply(DEFAULT_QUERY),
                ),
                _ => user_text("", VIDEO_PREFIX, case.num_frames(), DEFAULT_QUERY),
            };
            assert_eq!(rebuilt, case.query(), "{}: user text", case.label());
            assert_eq!(
                conversation(case.query()),
                case.prompt(),
                "{}: prompt",
                case.label()
            );
            let pieces = tokenize_prompt(m, case.prompt()).expect("tokenize");
            assert_eq!(
                prompt_ids(&pieces),
                case.prompt_ids,
                "{}: prompt ids",
                case.label()
            );
            let n_img = pieces
                .iter()
                .filter(|p| matches!(p, PromptPiece::Image(_)))
                .count();
            assert_eq!(n_img, case.num_frames(), "{}: image slots", case.label());
        }
    }
}

// ---------------------------------------------------------------- (b)(c)(d) f32

struct Row {
    label: String,
    first_err: f32,
    tokens_ok: bool,
    n_tokens: usize,
    step_err: f32,
    text_ok: bool,
    pieces_first_err: f32,
    pieces_tokens_ok: bool,
    pieces_text_ok: bool,
}

fn run_f32(model: &'static str) -> Vec<Row> {
    let m = &models(model).f32;
    let mut ctx = exact_ctx(m);
    let never = AtomicBool::new(false);
    let mut rows = Vec::new();
    for &name in cases(model) {
        let case = load_case(model, name);
        // (b) the whole spliced sequence as embeddings.
        let g = generate_from_embeddings(
            &mut ctx,
            m,
            &case.embeds,
            &greedy(),
            &mut no_stream(),
            &never,
        )
        .expect("generate from embeddings");
        assert_eq!(g.prompt_len, case.l());
        // (c) text pieces as token ids + image rows as embeddings.
        let pieces = tokenize_prompt(m, case.prompt()).expect("tokenize");
        let images = case.image_rows();
        let gp = generate(
            &mut ctx,
            m,
            &pieces,
            &images,
            &greedy(),
            &mut no_stream(),
            &never,
        )
        .expect("generate from pieces");
        assert_eq!(gp.prompt_len, case.l());
        rows.push(Row {
            label: case.label(),
            first_err: max_abs(&g.first_logits, &case.first_logits),
            tokens_ok: g.tokens == case.output_ids,
            n_tokens: case.output_ids.len(),
            step_err: step_err(&g, &case),
            text_ok: g.text == case.text(),
            pieces_first_err: max_abs(&gp.first_logits, &case.first_logits),
            pieces_tokens_ok: gp.tokens == case.output_ids,
            pieces_text_ok: gp.text == case.text(),
        });
        if g.text != case.text() {
            eprintln!(
                "{}: text {:?} != reference {:?}",
                case.label(),
                g.text,
                case.text()
            );
        }
        if g.tokens != case.output_ids {
            eprintln!(
                "{}: tokens {:?} != reference {:?}",
                case.label(),
                g.tokens,
                case.output_ids
            );
        }
    }
    rows
}

fn report_and_check(rows: &[Row]) {
    println!(
        "{:<14} {:>11} {:>7} {:>10} {:>5} | pieces: {:>11} {:>7} {:>5}",
        "case", "first_err", "tokens", "step_err", "text", "first_err", "tokens", "text"
    );
    for r in rows {
        println!(
            "{:<14} {:>11.2e} {:>7} {:>10.2e} {:>5} | pieces: {:>11.2e} {:>7} {:>5}",
            r.label,
            r.first_err,
            format!("{}/{}", if r.tokens_ok { "y" } else { "N" }, r.n_tokens),
            r.step_err,
            if r.text_ok { "y" } else { "N" },
            r.pieces_first_err,
            if r.pieces_tokens_ok { "y" } else { "N" },
            if r.pieces_text_ok { "y" } else { "N" },
        );
    }
    for r in rows {
        assert!(
            r.first_err <= FIRST_LOGITS_TOL,
            "{}: first_logits err {}",
            r.label,
            r.first_err
        );
        assert!(
            r.tokens_ok,
            "{}: greedy tokens differ (embeddings path)",
            r.label
        );
        assert!(
            r.step_err <= STEP_LOGITS_TOL,
            "{}: step_logits err {}",
            r.label,
            r.step_err
        );
        assert!(r.text_ok, "{}: decoded text differs", r.label);
        assert!(
            r.pieces_first_err <= FIRST_LOGITS_TOL,
            "{}: pieces first_logits",
            r.label
        );
        assert!(
            r.pieces_tokens_ok,
            "{}: greedy tokens differ (pieces path)",
            r.label
        );
        assert!(
            r.pieces_text_ok,
            "{}: decoded text differs (pieces path)",
            r.label
        );
    }
}

#[test]
fn tiny_f32_matches_reference() {
    report_and_check(&run_f32("tiny"));
}

#[test]
fn geom_f32_matches_reference() {
    report_and_check(&run_f32("geom"));
}

// ---------------------------------------------------------------- (e) streaming, cancel

/// Number of tokens up to and including the one whose text completed the
/// `k`-th streamed piece.
fn tokens_for_pieces(m: &LlamaModel, tokens: &[i32], k: usize) -> usize {
    let mut s = TextStream::new();
    let mut n = 0;
    for (i, &t) in tokens.iter().enumerate() {
        if m.is_eog(t) {
            break;
        }
        if !s.push(&m.token_to_piece(t)).is_empty() {
            n += 1;
            if n == k {
                return i + 1;
            }
        }
    }
    tokens.len()
}

/// `ignore_eos`: exactly `max_new_tokens` tokens, none of them an
/// end-of-generation token, and up to where the plain run ended by EOS the
/// same tokens (the EOS draw is masked and drawn again; nothing before it
/// changes).
#[test]
fn ignore_eos_generates_exactly_max_tokens() {
    let mut eos_cases = 0;
    for model in ["tiny", "geom"] {
        let m = &models(model).f32;
        for &name in cases(model) {
            let case = load_case(model, name);
            let pieces = tokenize_prompt(m, case.prompt()).expect("tokenize");
            let images = case.image_rows();
            let mut ctx = exact_ctx(m);
            let never = AtomicBool::new(false);
            let plain = GenerateOptions {
                collect_logits: false,
                max_new_tokens: 64,
                ..greedy()
            };
            let run = |ctx: &mut LlamaContext, o: &GenerateOptions| {
                generate(ctx, m, &pieces, &images, o, &mut no_stream(), &never).expect("generate")
            };
            let full = run(&mut ctx, &plain);
            let n = full.tokens.len() + 7;
            let forced = run(
                &mut ctx,
                &GenerateOptions {
                    max_new_tokens: n,
                    ignore_eos: true,
                    ..plain.clone()
                },
            );
            assert_eq!(forced.tokens.len(), n, "{}", case.label());
            assert_eq!(
                forced.stop_reason,
                StopReason::MaxTokens,
                "{}",
                case.label()
            );
            assert!(
                !forced.tokens.iter().any(|&t| m.is_eog(t)),
                "{}",
                case.label()
            );
            let kept = full.tokens.len() - usize::from(full.stopped_by_eos);
            assert_eq!(
                forced.tokens[..kept],
                full.tokens[..kept],
                "{}",
                case.label()
            );
            if full.stopped_by_eos {
                eos_cases += 1;
                assert!(forced.text.starts_with(&full.text), "{}", case.label());
            }
        }
    }
    // The masking path ran: some plain captions ended by EOS.
    assert!(
        eos_cases > 0,
        "no fixture caption ended by EOS within 64 tokens"
    );
}

#[test]
fn streaming_and_cancellation() {
    for (model, name) in [
        ("tiny", "c1"),
        ("tiny", "v1"),
        ("geom", "c1"),
        ("geom", "c3"),
    ] {
        let m = &models(model).f32;
        let case = load_case(model, name);
        let pieces = tokenize_prompt(m, case.prompt()).expect("tokenize");
        let images = case.image_rows();
        let mut ctx = exact_ctx(m);
        let never = AtomicBool::new(false);
        let opts = GenerateOptions {
            collect_logits: false,
            ..greedy()
        };

        // Pieces reassemble to the text.
        let mut streamed = Vec::new();
        let full = generate(
            &mut ctx,
            m,
            &pieces,
            &images,
            &opts,
            &mut |s: &str| {
                assert!(!s.is_empty());
                streamed.push(s.to_string());
                true
            },
            &never,
        )
        .expect("generate");
        assert_eq!(streamed.concat(), full.text, "{}", case.label());
        assert_eq!(full.text, case.text(), "{}", case.label());
        assert_eq!(full.stopped_by_eos, full.stop_reason == StopReason::Eos);

        // The callback returning false on its 3rd call stops generation right
        // after the token that completed the 3rd piece: exactly k tokens,
        // k = that token's 1-based index (3 when every token yields text).
        let mut calls = 0;
        let stopped = generate(
            &mut ctx,
            m,
            &pieces,
            &images,
            &opts,
            &mut |_: &str| {
                calls += 1;
                calls < 3
            },
            &never,
        )
        .expect("generate");
        let k = tokens_for_pieces(m, &full.tokens, 3);
        assert_eq!(calls, 3, "{}", case.label());
        assert_eq!(
            stopped.stop_reason,
            StopReason::Callback,
            "{}",
            case.label()
        );
        assert_eq!(stopped.tokens, full.tokens[..k], "{}", case.label());
        println!(
            "{}: callback stop after 3 pieces -> {} tokens",
            case.label(),
            k
        );

        // Cancelled before the start.
        let set = AtomicBool::new(true);
        let r = generate(&mut ctx, m, &pieces, &images, &opts, &mut no_stream(), &set);
        assert!(
            matches!(r, Err(Error::Cancelled)),
            "{}: {r:?}",
            case.label()
        );

        // Cancelled from another thread while generating (after the first piece).
        let flag = Arc::new(AtomicBool::new(false));
        let mut n_pieces = 0;
        let r = generate(
            &mut ctx,
            m,
            &pieces,
            &images,
            &opts,
            &mut |_: &str| {
                n_pieces += 1;
                if n_pieces == 1 {
                    let f = Arc::clone(&flag);
                    std::thread::spawn(move || f.store(true, Ordering::SeqCst))
                        .join()
                        .expect("thread");
                }
                true
            },
            &flag,
        );
        assert!(
            matches!(r, Err(Error::Cancelled)),
            "{}: {r:?}",
            case.label()
        );
        assert_eq!(n_pieces, 1);

        // The context is still usable and deterministic afterwards.
        let again = generate(
            &mut ctx,
            m,
            &pieces,
            &images,
            &opts,
            &mut no_stream(),
            &never,
        )
        .expect("generate after cancel");
        assert_eq!(again.tokens, full.tokens, "{}", case.label());
    }
}

#[test]
fn abort_flag_interrupts_compute() {
    let m = &models("geom").f32;
    let case = load_case("geom", "c1");
    let mut ctx = exact_ctx(m);
    ctx.set_abort_flag(Some(Arc::new(AtomicBool::new(true))));
    let r = ctx.decode_embd(&case.embeds, 0, true);
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    // Inside generate the scoped flag replaces the context's one.
    let never = AtomicBool::new(false);
    let g = generate_from_embeddings(
        &mut ctx,
        m,
        &case.embeds,
        &greedy(),
        &mut no_stream(),
        &never,
    );
    assert!(g.is_ok(), "{g:?}");
    // ... and the context's flag is back afterwards.
    ctx.clear();
    assert!(matches!(
        ctx.decode_embd(&case.embeds, 0, true),
        Err(Error::Cancelled)
    ));
    ctx.set_abort_flag(None);
    ctx.clear();
    ctx.decode_embd(&case.embeds, 0, true)
        .expect("decode without abort flag");
    let l = ctx.logits_last().expect("logits");
    assert!(max_abs(l, &case.first_logits) <= FIRST_LOGITS_TOL);
}

// ---------------------------------------------------------------- errors

/// Text tokens are prefilled as rows of the token table that dam reads from
/// the GGUF file: those rows must be the reference's `embed_tokens` rows
/// (f32: bit-exact), and decoding them must give llama.cpp's logits for the
/// token ids (f32 and f16 tables: identical), also across several
/// sequences prefilled in one run of batches.
#[test]
fn token_rows_are_llama_cpp_inputs() {
    let case = load_case("tiny", "c1");
    let ids: Vec<i32> = case.prompt_ids.iter().map(|&x| x as i32).collect();
    let cut = ids.iter().position(|&x| x == -200).expect("image slot");
    let text = &ids[..cut];
    let mut rows = Vec::new();
    models("tiny").f32.embed_tokens(text, &mut rows).unwrap();
    assert_eq!(rows, case.embeds[..cut * case.h], "rows of embed_tokens");
    for m in [&models("tiny").f32, &models("tiny").f16] {
        let mut ctx = LlamaContext::new(
            m,
            &ContextParams {
                n_ctx: 512,
                n_batch: 16,
                n_threads: 2,
                n_seq_max: 2,
                type_k: KvType::F32,
                type_v: KvType::F32,
                flash_attn: FlashAttn::Off,
                ..ContextParams::default()
            },
        )
        .expect("context");
        ctx.decode_tokens(text, 0, true).unwrap();
        let by_ids = ctx.logits_last().unwrap().to_vec();
        let mut rows = Vec::new();
        m.embed_tokens(text, &mut rows).unwrap();
        ctx.clear();
        ctx.decode_embd(&rows, 0, true).unwrap();
        assert_eq!(ctx.logits_last().unwrap(), by_ids, "one sequence");
        // Two sequences in one run of batches (n_batch 16 splits both).
        let short = &rows[..5 * m.n_embd()];
        ctx.clear();
        let both = ctx.decode_embd_seqs(&[&rows, short]).unwrap();
        assert_eq!(both.len(), 2);
        assert!(max_abs(&both[0], &by_ids) <= 1e-4, "sequence 0");
        ctx.clear();
        ctx.decode_tokens(&text[..5], 0, true).unwrap();
        let short_ids = ctx.logits_last().unwrap().to_vec();
        assert!(max_abs(&both[1], &short_ids) <= 1e-4, "sequence 1");
        ctx.clear();
        assert!(matches!(
            ctx.decode_embd_seqs(&[&rows, short, short]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            ctx.decode_embd_seqs(&[&rows[1..]]),
            Err(Error::InvalidArgument(_))
        ));
    }
    let mut out = Vec::new();
    for bad in [-1, 1000, i32::MAX] {
        assert!(matches!(
            models("tiny").f32.embed_tokens(&[1, bad], &mut out),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn bad_inputs_are_errors() {
    let m = &models("tiny").f32;
    let mut ctx = exact_ctx(m);
    let n_embd = m.n_embd();
    assert!(matches!(ctx.logits_last(), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        ctx.decode_tokens(&[], 0, true),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ctx.decode_tokens(&[5000], 0, true),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ctx.decode_tokens(&[-1], 0, true),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ctx.decode_embd(&[0.0; 3], 0, true),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ctx.decode_embd(&[], 0, true),
        Err(Error::InvalidArgument(_))
    ));
    let n_ctx = ctx.n_ctx();
    assert!(matches!(
        ctx.decode_tokens(&[1, 2], n_ctx - 1, true),
        Err(Error::ContextOverflow(_))
    ));
    let too_long = vec![0.0f32; (n_ctx + 1) * n_embd];
    let never = AtomicBool::new(false);
    assert!(matches!(
        generate_from_embeddings(&mut ctx, m, &too_long, &greedy(), &mut no_stream(), &never),
        Err(Error::ContextOverflow(_))
    ));
    // Image slots without images, bad image sizes, unused images.
    let pieces = vec![PromptPiece::Tokens(vec![1, 5]), PromptPiece::Image(0)];
    let bad: Vec<f32> = vec![0.0; n_embd + 1];
    let good: Vec<f32> = vec![0.0; 2 * n_embd];
    for images in [vec![], vec![&bad[..]], vec![&good[..], &good[..]]] {
        let r = generate(
            &mut ctx,
            m,
            &pieces,
            &images,
            &greedy(),
            &mut no_stream(),
            &never,
        );
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    // A context of another model.
    let other = &models("tiny").f16;
    let r = generate(
        &mut ctx,
        other,
        &pieces,
        &[&good[..]],
        &greedy(),
        &mut no_stream(),
        &never,
    );
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    // Vocabulary helpers on bad ids.
    assert!(m.token_to_piece(-3).is_empty());
    assert!(m.token_to_piece(1 << 20).is_empty());
    assert!(!m.is_eog(-1));
    assert_eq!(m.bos(), Some(1));
    assert_eq!(m.eos(), Some(2));
    assert!(m.is_eog(2));
    assert!(
        m.token_to_piece(2).is_empty(),
        "control tokens render as nothing"
    );
    assert_eq!(
        m.tokenize("", false, false).expect("empty"),
        Vec::<i32>::new()
    );
    assert_eq!(m.tokenize("", true, false).expect("bos"), vec![1]);
    // A missing file, a file that is not GGUF.
    assert!(matches!(
        LlamaModel::load(Path::new("/nonexistent.gguf"), &ModelParams::default()),
        Err(Error::Io(_))
    ));
    let junk = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llm-test-junk-{}.gguf", std::process::id()));
    std::fs::write(&junk, b"GGUF but not really").expect("write junk");
    let r = LlamaModel::load(&junk, &ModelParams::default());
    assert!(matches!(r, Err(Error::InvalidModel(_))), "{r:?}");
    let _ = std::fs::remove_file(&junk);
}

#[test]
fn log_hook_receives_llama_lines() {
    use dam::llama::{set_log_hook, LogLevel};
    use std::sync::atomic::AtomicUsize;
    let errors = Arc::new(AtomicUsize::new(0));
    let e = Arc::clone(&errors);
    set_log_hook(Some(Box::new(move |level, _text: &str| {
        if level == LogLevel::Error {
            e.fetch_add(1, Ordering::SeqCst);
        }
    })));
    let junk = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llm-test-junk2-{}.gguf", std::process::id()));
    std::fs::write(&junk, b"not a model").expect("write junk");
    let r = LlamaModel::load(&junk, &ModelParams::default());
    set_log_hook(None);
    let _ = std::fs::remove_file(&junk);
    println!("loading junk: {r:?}");
    assert!(matches!(r, Err(Error::InvalidModel(_))));
    assert!(
        errors.load(Ordering::SeqCst) > 0,
        "no error line reached the hook"
    );
}

// ---------------------------------------------------------------- sampling

#[test]
fn sampling_is_seeded() {
    let m = &models("geom").f32;
    let case = load_case("geom", "c1");
    let mut ctx = exact_ctx(m);
    let never = AtomicBool::new(false);
    let opts = GenerateOptions {
        max_new_tokens: 32,
        seed: 42,
        ..Default::default()
    };
    let a = generate_from_embeddings(&mut ctx, m, &case.embeds, &opts, &mut no_stream(), &never)
        .expect("sample");
    let b = generate_from_embeddings(&mut ctx, m, &case.embeds, &opts, &mut no_stream(), &never)
        .expect("sample");
    assert_eq!(a.tokens, b.tokens);
    assert!(!a.tokens.is_empty() && a.tokens.len() <= 32);
    println!(
        "geom/c1 sampled (T=0.2, top_p=0.5, top_k=50, seed 42): {:?}",
        a.tokens
    );
}

// ---------------------------------------------------------------- (f) f16

#[test]
fn f16_agreement() {
    let never = AtomicBool::new(false);
    for model in ["tiny", "geom"] {
        let m = &models(model).f16;
        // Engine defaults: f16 KV cache, flash attention auto.
        let mut ctx = LlamaContext::new(
            m,
            &ContextParams {
                n_ctx: 512,
                n_threads: 2,
                ..ContextParams::default()
            },
        )
        .expect("context");
        for &name in cases(model) {
            let case = load_case(model, name);
            let g = generate_from_embeddings(
                &mut ctx,
                m,
                &case.embeds,
                &greedy(),
                &mut no_stream(),
                &never,
            )
            .expect("generate f16");
            let agree = g
                .tokens
                .iter()
                .zip(&case.output_ids)
                .take_while(|(a, b)| a == b)
                .count();
            let mut sorted = case.first_logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let margin = sorted[0] - sorted[1];
            println!(
                "f16 {:<14} first_logits err {:.2e}  tokens agreeing (prefix) {}/{}  top1-top2 margin {:.3}",
                case.label(),
                max_abs(&g.first_logits, &case.first_logits),
                agree,
                case.output_ids.len(),
                margin
            );
            if margin > 0.05 {
                assert_eq!(
                    g.tokens.first(),
                    case.output_ids.first(),
                    "{}: first token",
                    case.label()
                );
            }
        }
    }
}

// ---------------------------------------------------------------- speed

#[test]
fn geom_decode_speed() {
    let m = &models("geom").f32;
    let case = load_case("geom", "c1");
    let mut ctx = LlamaContext::new(
        m,
        &ContextParams {
            n_ctx: 1024,
            n_threads: 2,
            ..ContextParams::default()
        },
    )
    .expect("context");
    let never = AtomicBool::new(false);
    let opts = GenerateOptions {
        max_new_tokens: 256,
        temperature: 0.0,
        ..Default::default()
    };
    let g = generate_from_embeddings(&mut ctx, m, &case.embeds, &opts, &mut no_stream(), &never)
        .expect("generate");
    let t = &g.timings;
    println!(
        "geom decode: {} steps in {:.1} ms = {:.0} tokens/s; prefill {} positions in {:.1} ms ({:?})",
        t.n_decoded,
        t.decode_ms,
        t.decode_tokens_per_s(),
        t.n_prompt_tokens,
        t.prefill_ms,
        g.stop_reason
    );
    assert_eq!(t.n_prompt_tokens, case.l());
}

// ---------------------------------------------------------------- (g) UTF-8 streaming

fn stream(pieces: &[&[u8]]) -> Vec<String> {
    let mut s = TextStream::new();
    let mut out: Vec<String> = pieces
        .iter()
        .map(|p| s.push(p))
        .filter(|t| !t.is_empty())
        .collect();
    let t = s.finish();
    if !t.is_empty() {
        out.push(t);
    }
    out
}

#[test]
fn utf8_char_split_over_three_tokens() {
    let c = "東".as_bytes(); // E6 9D B1
    assert_eq!(c.len(), 3);
    assert_eq!(
        stream(&[b" x", &c[..1], &c[1..2], &c[2..], b"y"]),
        vec!["x", "東", "y"]
    );
    // The buffered bytes are not emitted until the character completes.
    let mut s = TextStream::new();
    assert_eq!(s.push(b" a"), "a");
    assert_eq!(s.push(&c[..1]), "");
    assert_eq!(s.push(&c[1..2]), "");
    assert_eq!(s.push(&c[2..]), "東");
}

#[test]
fn utf8_invalid_bytes() {
    // Fixture tiny/c1: <0xB3> <0x51> <0xD4> ▁rounded -> "�Q� rounded".
    assert_eq!(
        stream(&[b"x", &[0xB3], b"Q", &[0xD4], b" rounded"]).concat(),
        "x\u{FFFD}Q\u{FFFD} rounded"
    );
    // A lone continuation byte at the start, a truncated sequence at the end.
    assert_eq!(
        stream(&[&[0x80], b"a", &[0xE6, 0x9D]]).concat(),
        "\u{FFFD}a\u{FFFD}"
    );
    // A 2-byte character split over two byte tokens (<0xCC> <0x92> = U+0312).
    assert_eq!(stream(&[b"d", &[0xCC], &[0x92]]).concat(), "d\u{312}");
    // Leading/trailing whitespace stripped like Python's strip(); inner kept.
    assert_eq!(
        stream(&[b" i", &[0x0B], b"J", b" ", b"\n"]).concat(),
        "i\u{b}J"
    );
}
