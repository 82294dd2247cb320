//! `dam bench`: times each stage of greedy requests (JSON on stdout).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use dam::image::{load_mask, load_rgb, Mask, RgbImage};
use dam::vision::Detail;
use dam::{find_model_files, DescribeOptions, Error, ImageView, Region, Result, Session};
use serde_json::{json, Value};

use dam::segmenter::regions::clicks_prompt;
use dam::segmenter::Segmenter;

use crate::common::{cli_threads, load_model, model_params, ModelArgs};
use crate::inputs::clicks_and_box;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, short = 'i')]
    image: PathBuf,
    #[arg(long, required_unless_present = "segmenter_only")]
    mask: Option<PathBuf>,
    /// New tokens per request (greedy; a synthetic model never stops early).
    #[arg(long, short = 'n', default_value_t = 64)]
    max_tokens: usize,
    /// Measured requests.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Requests run first and not reported.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Only preprocessing and the vision stage (the LLM file is not loaded).
    #[arg(long)]
    vision_only: bool,
    /// With K > 1, each run also describes K regions (the mask and K - 1
    /// boxes) as K sequential calls and as one describe_many batch.
    #[arg(long, default_value_t = 1)]
    regions: usize,
    /// Time the --segmenter alone (no DAM model is loaded): preprocessing,
    /// the image encoder, the decoder, a whole first click and a re-click on
    /// the cached image. The prompt is --points/--labels and/or --box, or
    /// one click at the image's centre.
    #[arg(long, requires = "segmenter", conflicts_with = "vision_only")]
    segmenter_only: bool,
    /// Clicks x,y;x,y in pixels (with --segmenter-only).
    #[arg(
        long,
        value_name = "X,Y;...",
        allow_hyphen_values = true,
        requires = "segmenter_only"
    )]
    points: Option<String>,
    /// One label per click: 1 = positive (the default), 0 = negative.
    #[arg(long, value_name = "L,L,...", requires = "points")]
    labels: Option<String>,
    /// A box x0,y0,x1,y1 in pixels (with --segmenter-only).
    #[arg(
        long = "box",
        value_name = "X0,Y0,X1,Y1",
        allow_hyphen_values = true,
        requires = "segmenter_only"
    )]
    bbox: Option<String>,
}

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Bytes of LLM weights one decode step reads: every tensor but the token
/// embedding (of which one row is read).
fn llm_bytes_per_token(path: &Path) -> Result<u64> {
    let map = dam::ggml::MappedFile::open(path)?;
    let h = dam::gguf_file::GgufHeader::parse(map.bytes(), &path.display().to_string())?;
    Ok(h.tensors
        .iter()
        .filter(|t| t.name != "token_embd.weight")
        .map(|t| t.nbytes)
        .sum())
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let rgb = load_rgb(&a.image)?;
    let threads = cli_threads(a.model.threads)?;
    if let (true, Some(path)) = (a.segmenter_only, &a.model.segmenter) {
        println!("{}", bench_segmenter(&a, path, &rgb, threads)?);
        return Ok(());
    }
    let mask = match &a.mask {
        Some(m) => load_mask(m)?,
        None => return Err(Error::InvalidArgument("give --mask".into())),
    };
    let out = if a.vision_only {
        bench_vision(&a, &rgb, &mask, threads)?
    } else {
        bench_model(&a, &rgb, &mask, threads)?
    };
    println!("{out}");
    Ok(())
}

/// `--vision-only`: preprocessing and the vision stage, no LLM.
fn bench_vision(a: &BenchArgs, rgb: &RgbImage, mask: &Mask, threads: usize) -> Result<Value> {
    let vision = match (&a.model.vision, &a.model.model) {
        (Some(v), _) => v.clone(),
        (None, Some(m)) => find_model_files(m)?.1,
        (None, None) => return Err(Error::InvalidArgument("give --vision or --model".into())),
    };
    let t0 = Instant::now();
    let p = model_params(&a.model, false)?;
    let vm = dam::vision::VisionModel::load_with(&vision, &p.vision_options()?)?;
    let load_ms = ms(t0);
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut backend = vm.backend(threads, cancel)?;
    let hp = &vm.hp;
    let mut runs = Vec::new();
    for k in 0..a.warmup + a.runs {
        let t0 = Instant::now();
        let views = dam::preprocess::make_views_threads(
            rgb,
            mask,
            hp.image_size,
            hp.image_mean,
            hp.image_std,
            threads,
        )?;
        let preprocess_ms = ms(t0);
        let t1 = Instant::now();
        let o = vm.encode(&mut backend, &[&views], Detail::Embeddings)?;
        let vision_ms = ms(t1);
        let finite = o.embeddings.iter().flatten().all(|x| x.is_finite());
        if k >= a.warmup {
            runs.push(json!({
                "preprocess_ms": preprocess_ms, "vision_ms": vision_ms,
                "context_provider_applied": !views.focal_is_full, "finite": finite,
            }));
        }
    }
    Ok(json!({
        "vision": vision, "vision_file_bytes": file_size(&vision),
        "vision_weight_type": vm.weight_type.name(),
        "vision_repacked_matrices": vm.n_repacked(),
        "threads": threads, "load_ms": load_ms, "runs": runs,
        "peak_rss_bytes": peak_rss(),
    }))
}

/// The whole model: load, requests on the mask, and with `--regions` the
/// sequential / batched comparison.
fn bench_model(a: &BenchArgs, rgb: &RgbImage, mask: &Mask, threads: usize) -> Result<Value> {
    let t0 = Instant::now();
    let model = load_model(&a.model, false)?;
    let load_ms = ms(t0);
    let opts = DescribeOptions {
        max_new_tokens: a.max_tokens,
        ..DescribeOptions::greedy()
    };
    // The session and its LLM context (made at the first call otherwise),
    // as llama.cpp's load-to-ready counts its context.
    let t1 = Instant::now();
    let mut session = model.session()?;
    session.prepare(&opts)?;
    let session_ms = ms(t1);
    let image = rgb.view()?;
    let region = Region::Mask(mask.view()?);
    let mut runs = Vec::new();
    for k in 0..a.warmup + a.runs {
        let run = bench_request(&mut session, &image, &region, &opts)?;
        if k >= a.warmup {
            runs.push(run);
        }
    }
    let batches = if a.regions > 1 {
        bench_batches(a, &mut session, &image, region, &opts)?
    } else {
        Vec::new()
    };
    Ok(json!({
        "llm": model.llm_path, "vision": model.vision_path,
        "llm_file_bytes": file_size(&model.llm_path),
        "vision_file_bytes": file_size(&model.vision_path),
        "llm_weight_bytes_per_token": llm_bytes_per_token(&model.llm_path)?,
        "vision_weight_type": model.vision.weight_type.name(),
        "vision_repacked_matrices": model.vision.n_repacked(),
        "llm_mapped": model.llm_mapped,
        "threads": threads, "load_ms": load_ms, "session_ms": session_ms,
        "ready_ms": load_ms + session_ms, "runs": runs, "batches": batches,
        "peak_rss_bytes": peak_rss(),
    }))
}

/// `--segmenter-only`: each stage of a click on a new image, then a re-click.
fn bench_segmenter(a: &BenchArgs, path: &Path, rgb: &RgbImage, threads: usize) -> Result<Value> {
    let (clicks, bbox) =
        clicks_and_box(a.points.as_deref(), a.labels.as_deref(), a.bbox.as_deref())?;
    let clicks = if clicks.is_empty() && bbox.is_none() {
        vec![(rgb.width as f32 / 2.0, rgb.height as f32 / 2.0, true)]
    } else {
        clicks
    };
    let prompt = clicks_prompt(&clicks, bbox);
    let t0 = Instant::now();
    let mut seg = Segmenter::load(path, threads)?;
    let load_ms = ms(t0);
    let image = rgb.view()?;
    let mut runs = Vec::new();
    for k in 0..a.warmup + a.runs {
        // The stages one by one, through the public steps...
        let t = Instant::now();
        let pre = seg.preprocess(&image)?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let emb = seg.encode(&pre)?;
        let encode_ms = ms(t);
        let t = Instant::now();
        seg.decode(&emb, &pre, &prompt)?;
        let decode_ms = ms(t);
        // ...then what a caller sees: a click on a new image (all of it,
        // with the mask upscaled to the image) and a second click.
        seg.forget_image();
        let t = Instant::now();
        let s = seg.segment(&image, &prompt)?;
        let first_click_ms = ms(t);
        let t = Instant::now();
        seg.segment(&image, &prompt)?;
        let reclick_ms = ms(t);
        if k >= a.warmup {
            runs.push(json!({
                "preprocess_ms": preprocess_ms, "encode_ms": encode_ms,
                "decode_ms": decode_ms, "first_click_ms": first_click_ms,
                "reclick_ms": reclick_ms, "best_index": s.best, "iou_scores": s.iou,
                "mask_pixels": s.mask.count(),
            }));
        }
    }
    Ok(json!({
        "segmenter": path, "segmenter_file_bytes": file_size(path),
        "encoder": seg.hp.encoder_kind().name(), "image_size": seg.hp.image_size,
        "width": rgb.width, "height": rgb.height,
        "threads": threads, "load_ms": load_ms, "runs": runs,
        "peak_rss_bytes": peak_rss(),
    }))
}

/// One streamed request and its timings.
fn bench_request(
    session: &mut Session,
    image: &ImageView,
    region: &Region,
    opts: &DescribeOptions,
) -> Result<Value> {
    let t0 = Instant::now();
    let mut first: Option<f64> = None;
    let cap = session.describe_stream(image, region, opts, &mut |_| {
        first.get_or_insert_with(|| ms(t0));
        true
    })?;
    let total_ms = ms(t0);
    let t = &cap.timings;
    Ok(json!({
        "preprocess_ms": t.preprocess_ms, "vision_ms": t.vision_ms,
        "prefill_ms": t.prefill_ms, "decode_ms": t.decode_ms,
        "ttft_ms": t.preprocess_ms + t.vision_ms + t.prefill_ms,
        "first_text_ms": first, "total_ms": total_ms,
        "prompt_tokens": t.n_prompt_tokens, "decode_steps": t.n_decoded,
        "generated_tokens": cap.tokens.len(),
        "prefill_tokens_per_s": t.n_prompt_tokens as f64 * 1e3 / t.prefill_ms.max(1e-9),
        "decode_tokens_per_s": t.decode_tokens_per_s(),
        "context_provider_applied": cap.frames.iter().all(|f| f.context_applied),
        "caption": cap.text,
    }))
}

/// `--regions K`: the mask and K - 1 boxes, as K calls and as one batch.
fn bench_batches(
    a: &BenchArgs,
    session: &mut Session,
    image: &ImageView,
    region: Region,
    opts: &DescribeOptions,
) -> Result<Vec<Value>> {
    let mut regions = vec![region];
    for k in 1..a.regions {
        let f = (k % 4) as f32 * 0.15;
        regions.push(Region::Box {
            x0: 0.05 + f,
            y0: 0.1 + f * 0.5,
            x1: 0.5 + f,
            y1: 0.6 + f * 0.5,
            normalized: true,
        });
    }
    let mut batches = Vec::new();
    for k in 0..a.warmup + a.runs {
        let t0 = Instant::now();
        let mut single = Vec::new();
        for r in &regions {
            single.push(session.describe(image, r, opts)?);
        }
        let sequential_ms = ms(t0);
        let t1 = Instant::now();
        let many = session.describe_many(image, &regions, opts, &mut |_, _| true)?;
        let batched_ms = ms(t1);
        let equal = many
            .captions
            .iter()
            .zip(&single)
            .all(|(b, s)| b.tokens == s.tokens);
        let tokens: usize = single.iter().map(|c| c.tokens.len()).sum();
        let t = &many.timings;
        if k >= a.warmup {
            batches.push(json!({
                "regions": regions.len(), "tokens": tokens,
                "sequential_ms": sequential_ms, "batched_ms": batched_ms,
                "throughput_ratio": sequential_ms / batched_ms.max(1e-9),
                "equal_to_single_calls": equal,
                "sequential_vision_ms": single.iter().map(|c| c.timings.vision_ms).sum::<f64>(),
                "sequential_decode_ms": single.iter().map(|c| c.timings.decode_ms).sum::<f64>(),
                "batched_vision_ms": t.vision_ms, "batched_prefill_ms": t.prefill_ms,
                "batched_decode_ms": t.decode_ms,
            }));
        }
    }
    Ok(batches)
}
