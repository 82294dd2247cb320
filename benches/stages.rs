//! Criterion benchmarks of dam's stages on the `geom` fixture model (DAM's
//! token geometry: 384 px views, 27 x 27 patches, 196 image tokens; small
//! widths and random weights): preprocessing (both views), the vision stage
//! (both towers, the cross-attention and the projector), the LLM prefill
//! (text + 196 image rows) and 16 greedy decode steps.
//!
//! The fixture checkpoint is converted at start into
//! `$CARGO_TARGET_TMPDIR/dam-bench-geom` (type from `DAM_BENCH_TYPE`,
//! default f16). Threads: `DAM_BENCH_THREADS` (default: all cores).
//!
//! ```sh
//! cargo bench --bench stages
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use dam::image::{load_mask, load_rgb};
use dam::llama::{ContextParams, FlashAttn, KvType, LlamaContext, Sampler, SamplerParams};
use dam::llm::generate::prefill;
use dam::llm::prompt::{conversation, tokenize_prompt, user_text};
use dam::preprocess::make_views;
use dam::vision::Detail;
use dam::GgmlType;
use dam::{Model, ModelParams};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn threads() -> usize {
    std::env::var("DAM_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Converts the geom fixture and loads it.
fn model() -> Arc<Model> {
    let ty = std::env::var("DAM_BENCH_TYPE").unwrap_or_else(|_| "f16".into());
    let ty = GgmlType::parse(&ty).expect("DAM_BENCH_TYPE");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dam-bench-geom");
    let r = dam::convert::convert(
        &root().join("tests/fixtures/geom/checkpoint"),
        &out,
        ty,
        "geom",
        &dam::convert::ConvertOptions::default(),
    )
    .expect("convert the geom fixture");
    let params = ModelParams {
        threads: threads(),
        ..ModelParams::default()
    };
    Model::load(&r.llm_path, &r.vision_path, params).expect("load the geom model")
}

fn stages(c: &mut Criterion) {
    let model = model();
    let hp = model.vision.hp.clone();
    let cases = root().join("tests/fixtures/geom/cases");
    let rgb = load_rgb(cases.join("c1_image.png")).unwrap();
    let mask = load_mask(cases.join("c1_mask.png")).unwrap();
    let views = || make_views(&rgb, &mask, hp.image_size, hp.image_mean, hp.image_std).unwrap();

    let mut g = c.benchmark_group("geom");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    g.bench_function("preprocess (make_views, 2048x1365 -> 2 views)", |b| {
        b.iter(views)
    });

    let v = views();
    let mut backend = model
        .vision
        .backend(threads(), Arc::new(AtomicBool::new(false)))
        .unwrap();
    g.bench_function("vision (2 towers + cross-attn + projector)", |b| {
        b.iter(|| {
            model
                .vision
                .encode(&mut backend, &[&v], Detail::Embeddings)
                .unwrap()
        })
    });

    let emb = model
        .vision
        .encode(&mut backend, &[&v], Detail::Embeddings)
        .unwrap()
        .embeddings
        .remove(0);
    let prompt = conversation(&user_text(
        &hp.image_prefix,
        &hp.video_prefix,
        1,
        &hp.default_query,
    ));
    let pieces = tokenize_prompt(&model.llm, &prompt).unwrap();
    let mut ctx = LlamaContext::new(
        &model.llm,
        &ContextParams {
            n_ctx: 1024,
            n_batch: 1024,
            n_threads: threads() as i32,
            type_k: KvType::F16,
            type_v: KvType::F16,
            flash_attn: FlashAttn::Auto,
            n_seq_max: 1,
            gpu_offload: true,
        },
    )
    .unwrap();
    let images = [emb.as_slice()];
    g.bench_function("prefill (text + 196 image rows)", |b| {
        b.iter(|| prefill(&mut ctx, &model.llm, &pieces, &images).unwrap())
    });

    const STEPS: usize = 16;
    g.bench_function("decode (16 greedy steps)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let len = prefill(&mut ctx, &model.llm, &pieces, &images).unwrap();
                let mut sampler = Sampler::new(&SamplerParams {
                    temperature: 0.0,
                    top_k: 0,
                    top_p: 1.0,
                    seed: 0,
                })
                .unwrap();
                let t = Instant::now();
                for pos in len..len + STEPS {
                    let tok = sampler.sample(&mut ctx, -1).unwrap();
                    ctx.decode_tokens(&[tok], pos, true).unwrap();
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
