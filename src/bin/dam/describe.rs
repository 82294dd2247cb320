//! `dam describe`: a caption of one region (image) or one object (video).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use dam::image::Mask;
use dam::segmenter::regions::{prompt_of, NEEDS_SEGMENTER};
use dam::{Caption, DescribeOptions, Error, Frame, Model, Result, Session};

use crate::common::{load_model, ModelArgs};
use crate::inputs::{load_inputs, RegionArgs};

#[derive(Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    region: RegionArgs,
    /// The question (default: the model's, "Describe the masked region in detail.").
    #[arg(long, short = 'q')]
    query: Option<String>,
    /// Length control: words:N, about:N, more-than:N or sentences:N.
    #[arg(long)]
    length: Option<String>,
    /// Maximum new tokens.
    #[arg(long, short = 'n', default_value_t = 512)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy). Reference default 0.2.
    // Negative numbers parse, so that the range check reports them.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    temperature: f32,
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long, default_value_t = 50)]
    top_k: i32,
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    /// Generate exactly --max-tokens tokens: never stop at end-of-text
    /// (for benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Stream text as it is generated (default when stdout is a terminal).
    #[arg(long, overrides_with = "no_stream")]
    stream: bool,
    #[arg(long)]
    no_stream: bool,
    /// Print one JSON object (caption, tokens, timings, windows).
    #[arg(long)]
    json: bool,
    /// Write the image with the region tinted, its box and the focal window.
    #[arg(long, value_name = "OUT.png")]
    overlay: Option<PathBuf>,
}

pub fn run(a: DescribeArgs) -> Result<()> {
    let inputs = load_inputs(&a.region)?;
    let frames = inputs.frames()?;
    let opts = DescribeOptions {
        query: a.query.clone(),
        length: a
            .length
            .as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|why| Error::InvalidArgument(format!("--length {s}: {why}")))
            })
            .transpose()?,
        max_new_tokens: a.max_tokens,
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
        ignore_eos: a.ignore_eos,
    };
    // Rasterise once, early, so that region errors come before the model
    // loads (a video drops empty frames instead) and for the overlay;
    // segmented regions wait for the model's segmenter.
    let segmented = frames.iter().any(|f| prompt_of(&f.region).is_some());
    if segmented && a.model.segmenter.is_none() {
        return Err(Error::UnsupportedRegion(NEEDS_SEGMENTER.into()));
    }
    let early = (!segmented)
        .then(|| region_masks(&frames, None))
        .transpose()?;
    let model = load_model(&a.model, false)?;
    let masks = match early {
        Some(m) => m,
        None => region_masks(&frames, Some(&model))?,
    };
    let mut session = model.session()?;
    let stdout_tty = std::io::stdout().is_terminal();
    let stream = !a.json && (a.stream || (stdout_tty && !a.no_stream));
    let cap = generate(&mut session, &frames, &opts, stream)?;
    for k in &cap.dropped_frames {
        eprintln!("dam: warning: frame {k} dropped: its region is empty");
    }
    if let Some(path) = &a.overlay {
        write_overlay(path, &frames, &masks, &cap)?;
    }
    if a.json {
        println!("{}", caption_json(&cap, &model));
    } else if stream {
        println!();
    } else {
        println!("{}", cap.text);
    }
    Ok(())
}

/// The mask of each frame's region (with `model`'s segmenter, if given);
/// a single frame's must not be empty.
fn region_masks(frames: &[Frame], model: Option<&Model>) -> Result<Vec<Mask>> {
    let one = |f: &Frame| match model {
        Some(m) => m.region_mask(&f.region, &f.image),
        None => dam::region::rasterize_any(&f.region, &f.image),
    };
    let masks = frames.iter().map(one).collect::<Result<Vec<_>>>()?;
    if frames.len() == 1 && masks[0].is_empty() {
        return Err(Error::InvalidRegion(dam::region::EMPTY_REGION.into()));
    }
    Ok(masks)
}

/// Runs the request, printing text as it comes with `stream`; a terminal's
/// stderr shows "thinking ..." until the first text.
fn generate(
    session: &mut Session,
    frames: &[Frame],
    opts: &DescribeOptions,
    stream: bool,
) -> Result<Caption> {
    let err_tty = std::io::stderr().is_terminal();
    if err_tty {
        eprint!("thinking ...");
    }
    let mut first = true;
    let mut on_text = |t: &str| {
        if first && err_tty {
            eprint!("\r\x1b[2K");
        }
        first = false;
        if stream {
            print!("{t}");
            let _ = std::io::stdout().flush();
        }
        true
    };
    let cap = if frames.len() == 1 {
        session.describe_stream(&frames[0].image, &frames[0].region, opts, &mut on_text)?
    } else {
        session.describe_video(frames, opts, &mut on_text)?
    };
    if first && err_tty {
        eprint!("\r\x1b[2K");
    }
    Ok(cap)
}

fn caption_json(c: &Caption, m: &Model) -> serde_json::Value {
    let t = &c.timings;
    serde_json::json!({
        "caption": c.text,
        "tokens": c.tokens,
        "stopped_by_eos": c.stopped_by_eos,
        "frames": c.frames.iter().map(|f| serde_json::json!({
            "focal_window_xyxy": f.window.to_array(),
            "mask_box_xyxy": [f.mask_box.0, f.mask_box.1, f.mask_box.2, f.mask_box.3],
            "mask_pixels": f.mask_pixels,
            "context_provider_applied": f.context_applied,
        })).collect::<Vec<_>>(),
        "dropped_frames": c.dropped_frames,
        "timings_ms": {
            "load": m.load_ms, "preprocess": t.preprocess_ms, "vision": t.vision_ms,
            "prefill": t.prefill_ms, "decode": t.decode_ms,
        },
        "prompt_tokens": t.n_prompt_tokens,
        "generated_tokens": t.n_generated,
        "decode_tokens_per_s": t.decode_tokens_per_s(),
    })
}

fn write_overlay(path: &Path, frames: &[Frame], masks: &[Mask], cap: &Caption) -> Result<()> {
    // The first used frame (videos: one overlay of the first frame).
    let k = (0..frames.len())
        .find(|k| !cap.dropped_frames.contains(k))
        .unwrap_or(0);
    let (f, mask) = (&frames[k], &masks[k]);
    let info = cap
        .frames
        .first()
        .ok_or_else(|| Error::InvalidArgument("no frame".into()))?;
    let mut img = dam::overlay::draw(
        &f.image.to_rgb(),
        mask,
        info.mask_box,
        info.window.to_array(),
    )?;
    if let dam::Region::Points(clicks) = &f.region {
        dam::overlay::draw_clicks(&mut img, clicks);
    }
    image::save_buffer(
        path,
        &img.data,
        img.width,
        img.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}
