//! `dam`: describe regions of images and videos, convert and quantize
//! checkpoints, dump every stage for parity checks.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dam::image::{load_mask, load_rgb, Mask, RgbImage};
use dam::llama::{FlashAttn, KvType};
use dam::model::Trace;
use dam::model::MAX_THREADS;
use dam::vision::Detail;
use dam::GgmlType;
use dam::{
    find_model_files, Caption, DescribeOptions, Error, Frame, LengthControl, Model, ModelParams,
    PixelFormat, Region, Result, VisionDevice,
};

#[derive(Parser)]
#[command(
    name = "dam",
    version,
    about = "Describe Anything: detailed captions of image and video regions"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe a masked region of an image, or of up to 8 video frames.
    Describe(DescribeArgs),
    /// Convert a Hugging Face DAM checkpoint folder into the two GGUF files.
    Convert(ConvertArgs),
    /// Re-quantize an LLM or vision GGUF file.
    Quantize(QuantizeArgs),
    /// Run one request and write every stage (parity/debugging).
    Dump(DumpArgs),
    /// Print a model's hyper-parameters and the compute backend.
    Info(ModelArgs),
    /// Write a model with DAM-3B's (or a tiny) shapes and seeded random weights.
    Synth(SynthArgs),
    /// Time each stage of greedy requests (JSON on stdout).
    Bench(BenchArgs),
    /// Serve captions over HTTP: an OpenAI-compatible chat-completions API.
    #[cfg(feature = "server")]
    Serve {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        serve: dam::server::ServeArgs,
    },
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// The LLM file (*-llm-*.gguf).
    #[arg(long)]
    llm: Option<PathBuf>,
    /// The vision file (*-vision-*.gguf).
    #[arg(long)]
    vision: Option<PathBuf>,
    /// A folder with one pair of files, or either file of a pair.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// KV cache type.
    #[arg(long, value_enum, default_value_t = KvType::F16)]
    kv_type: KvType,
    /// Flash attention.
    #[arg(long, value_enum, default_value_t = FlashAttn::Auto)]
    flash_attn: FlashAttn,
    /// Context length (0 = the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    ctx: u32,
    /// LLM layers on the GPU (negative = all; 0 = none). Without a GPU, 0.
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", default_value_t = -1, allow_hyphen_values = true)]
    n_gpu_layers: i32,
    /// The GPU to use (index in `dam info`'s list of GPUs).
    #[arg(long, default_value_t = 0)]
    main_gpu: i32,
    /// Where the vision stage runs (gpu: the main GPU when there is one).
    #[arg(long, value_enum, default_value_t = VisionDevice::Gpu)]
    vision_device: VisionDevice,
    /// Keep every CPU weight in the file's layout (no AMX / repacked copies:
    /// less memory, slower matrix products).
    #[arg(long)]
    no_repack: bool,
}

#[derive(Args)]
struct RegionArgs {
    /// Input image (png/jpeg); repeat with --mask for a video.
    #[arg(long, short = 'i', required = true)]
    image: Vec<PathBuf>,
    /// Mask image of the same size (pixel > 0 = region); one per --image.
    #[arg(long)]
    mask: Vec<PathBuf>,
    /// A box x0,y0,x1,y1 (pixels, or fractions with --normalized).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", allow_hyphen_values = true)]
    bbox: Option<String>,
    /// A scribble: points x,y;x,y;... drawn with --brush pixels.
    #[arg(long, value_name = "X,Y;X,Y;...", allow_hyphen_values = true)]
    scribble: Option<String>,
    /// Brush diameter of --scribble, pixels.
    #[arg(long, default_value_t = 10.0)]
    brush: f32,
    /// Clicks x,y;x,y (needs a segmenter: not supported yet).
    #[arg(long, value_name = "X,Y;...")]
    points: Option<String>,
    /// Take the mask from the image's alpha channel (alpha > 0).
    #[arg(long)]
    alpha_mask: bool,
    /// --box / --scribble coordinates are fractions of width/height.
    #[arg(long)]
    normalized: bool,
}

#[derive(Args)]
struct DescribeArgs {
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

#[derive(Args)]
struct ConvertArgs {
    /// The checkpoint folder (config.json, llm/, vision_tower/, mm_projector/, context_provider/).
    hf_dir: PathBuf,
    #[arg(long)]
    outdir: PathBuf,
    /// Weight type of the matrices: f32, f16, bf16 or q8_0.
    #[arg(long = "type", default_value = "f16")]
    ty: String,
    /// File name stem (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Prefix of the single-image prompt ("Image: " for the joint image+video checkpoint).
    #[arg(long, default_value = "")]
    image_prefix: String,
}

#[derive(Args)]
struct QuantizeArgs {
    input: PathBuf,
    output: PathBuf,
    /// q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q2_k, q3_k, f16, bf16, f32.
    #[arg(value_name = "TYPE")]
    ty: String,
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct DumpArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, short = 'i', required = true)]
    image: Vec<PathBuf>,
    #[arg(long, required = true)]
    mask: Vec<PathBuf>,
    /// The user text without <image> (default: the model's query).
    #[arg(long, short = 'q')]
    query: Option<String>,
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Also write every vision layer's output (debug.* names).
    #[arg(long)]
    debug: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Describe(a) => describe(a),
        Cmd::Convert(a) => convert(a),
        Cmd::Quantize(a) => quantize(a),
        Cmd::Dump(a) => dump(a),
        Cmd::Info(a) => info(a),
        Cmd::Synth(a) => synth(a),
        Cmd::Bench(a) => bench(a),
        #[cfg(feature = "server")]
        Cmd::Serve { model, serve } => {
            load_model(&model, false).and_then(|m| dam::server::run(m, serve))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dam: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--threads`: 0 = all cores; more than the engine's limit is refused.
fn cli_threads(n: usize) -> Result<usize> {
    dam::model::resolve_threads(n)
        .map_err(|_| Error::InvalidArgument(format!("--threads {n}: at most {MAX_THREADS}")))
}

fn load_model(a: &ModelArgs, reference: bool) -> Result<std::sync::Arc<Model>> {
    cli_threads(a.threads)?;
    let (llm, vision) = match (&a.llm, &a.vision, &a.model) {
        (Some(l), Some(v), None) => (l.clone(), v.clone()),
        (None, None, Some(m)) => find_model_files(m)?,
        (Some(x), None, None) | (None, Some(x), None) => find_model_files(x)?,
        _ => {
            return Err(Error::InvalidArgument(
                "give --model, or --llm and --vision".into(),
            ))
        }
    };
    let p = model_params(a, reference)?;
    let tty = std::io::stderr().is_terminal();
    if tty {
        eprint!("loading {} ...", vision.display());
    }
    let m = Model::load(&llm, &vision, p);
    if tty {
        eprint!("\r\x1b[2K");
    }
    m
}

/// The model parameters the flags ask for.
fn model_params(a: &ModelArgs, reference: bool) -> Result<ModelParams> {
    let mut p = if reference {
        ModelParams::reference()
    } else {
        ModelParams::default()
    };
    p.threads = a.threads;
    p.n_gpu_layers = a.n_gpu_layers;
    p.main_gpu = a.main_gpu;
    p.repack = !a.no_repack;
    p.vision_device = a.vision_device;
    p.n_ctx = a.ctx;
    if !reference {
        p.kv_type = a.kv_type;
        p.flash_attn = a.flash_attn;
    }
    Ok(p)
}

fn floats(s: &str, what: &str) -> Result<Vec<f32>> {
    s.split([',', ';', ' '])
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.trim()
                .parse::<f32>()
                .map_err(|_| Error::InvalidArgument(format!("{what}: '{t}' is not a number")))
        })
        .collect()
}

fn pairs(s: &str, what: &str) -> Result<Vec<(f32, f32)>> {
    let v = floats(s, what)?;
    if v.is_empty() || v.len() % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "{what}: expected x,y pairs"
        )));
    }
    Ok(v.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Loaded inputs: images (RGBA kept when the alpha channel is the mask) and
/// one region source per frame.
struct Inputs {
    images: Vec<(Vec<u8>, u32, u32, PixelFormat)>,
    masks: Vec<Option<Mask>>,
    /// The region of every frame, unless it comes from `masks`.
    region: Option<Region<'static>>,
}

fn load_inputs(r: &RegionArgs) -> Result<Inputs> {
    let kinds = [
        !r.mask.is_empty(),
        r.bbox.is_some(),
        r.scribble.is_some(),
        r.points.is_some(),
        r.alpha_mask,
    ];
    if kinds.iter().filter(|&&k| k).count() != 1 {
        return Err(Error::InvalidArgument(
            "give exactly one region: --mask, --box, --scribble, --points or --alpha-mask".into(),
        ));
    }
    if !r.mask.is_empty() && r.mask.len() != r.image.len() {
        return Err(Error::InvalidArgument(format!(
            "{} images but {} masks",
            r.image.len(),
            r.mask.len()
        )));
    }
    let mut images = Vec::new();
    for p in &r.image {
        if r.alpha_mask {
            let img = image::open(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
            if !img.color().has_alpha() {
                return Err(Error::InvalidRegion(format!(
                    "{}: --alpha-mask needs an image with alpha",
                    p.display()
                )));
            }
            let rgba = img.to_rgba8();
            let (w, h) = rgba.dimensions();
            images.push((rgba.into_raw(), w, h, PixelFormat::Rgba8));
        } else {
            let RgbImage {
                width,
                height,
                data,
            } = load_rgb(p)?;
            images.push((data, width, height, PixelFormat::Rgb8));
        }
    }
    let masks = if r.mask.is_empty() {
        vec![None; images.len()]
    } else {
        r.mask
            .iter()
            .map(|p| load_mask(p).map(Some))
            .collect::<Result<_>>()?
    };
    let region = if let Some(b) = &r.bbox {
        let v = floats(b, "--box")?;
        let [x0, y0, x1, y1] = v[..] else {
            return Err(Error::InvalidArgument("--box: expected x0,y0,x1,y1".into()));
        };
        Some(Region::Box {
            x0,
            y0,
            x1,
            y1,
            normalized: r.normalized,
        })
    } else if let Some(s) = &r.scribble {
        Some(Region::Scribble {
            points: pairs(s, "--scribble")?,
            width: r.brush,
            normalized: r.normalized,
        })
    } else if let Some(p) = &r.points {
        let clicks = pairs(p, "--points")?;
        Some(Region::Points(
            clicks.into_iter().map(|(x, y)| (x, y, true)).collect(),
        ))
    } else if r.alpha_mask {
        Some(Region::AlphaOfImage)
    } else {
        None
    };
    Ok(Inputs {
        images,
        masks,
        region,
    })
}

impl Inputs {
    fn frames(&self) -> Result<Vec<Frame<'_>>> {
        self.images
            .iter()
            .zip(&self.masks)
            .map(|((data, w, h, fmt), mask)| {
                let image =
                    dam::ImageView::new(data, *w, *h, *w as usize * fmt.bytes_per_pixel(), *fmt)?;
                let region = match (mask, &self.region) {
                    (Some(m), _) => Region::Mask(m.view()?),
                    (None, Some(r)) => r.clone(),
                    (None, None) => return Err(Error::InvalidArgument("no region given".into())),
                };
                Ok(Frame { image, region })
            })
            .collect()
    }
}

fn parse_length(s: &str) -> Result<LengthControl> {
    let (k, n) = s
        .split_once(':')
        .ok_or_else(|| Error::InvalidArgument(format!("--length {s}: expected KIND:N")))?;
    let n: u32 = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
        Error::InvalidArgument(format!("--length {s}: N must be a positive integer"))
    })?;
    match k {
        "words" => Ok(LengthControl::Words(n)),
        "about" | "about-words" => Ok(LengthControl::AboutWords(n)),
        "more-than" | "more-than-words" => Ok(LengthControl::MoreThanWords(n)),
        "sentences" => Ok(LengthControl::Sentences(n)),
        _ => Err(Error::InvalidArgument(format!(
            "--length {s}: kind must be words, about, more-than or sentences"
        ))),
    }
}

fn describe(a: DescribeArgs) -> Result<()> {
    let inputs = load_inputs(&a.region)?;
    let frames = inputs.frames()?;
    let opts = DescribeOptions {
        query: a.query.clone(),
        length: a.length.as_deref().map(parse_length).transpose()?,
        max_new_tokens: a.max_tokens,
        temperature: if a.greedy { 0.0 } else { a.temperature },
        top_p: a.top_p,
        top_k: a.top_k,
        seed: a.seed,
    };
    // Rasterise once, early, so that region errors come before the model
    // loads (a video drops empty frames instead) and for the overlay.
    let masks = frames
        .iter()
        .map(|f| match frames.len() {
            1 => dam::region::rasterize(&f.region, &f.image),
            _ => dam::region::rasterize_any(&f.region, &f.image),
        })
        .collect::<Result<Vec<_>>>()?;
    let model = load_model(&a.model, false)?;
    let mut session = model.session()?;
    let stdout_tty = std::io::stdout().is_terminal();
    let stream = !a.json && (a.stream || (stdout_tty && !a.no_stream));
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
        session.describe_stream(&frames[0].image, &frames[0].region, &opts, &mut on_text)?
    } else {
        session.describe_video(&frames, &opts, &mut on_text)?
    };
    if first && err_tty {
        eprint!("\r\x1b[2K");
    }
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
    let img = dam::overlay::draw(
        &f.image.to_rgb(),
        mask,
        info.mask_box,
        info.window.to_array(),
    )?;
    image::save_buffer(
        path,
        &img.data,
        img.width,
        img.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

fn convert(a: ConvertArgs) -> Result<()> {
    let ty = GgmlType::parse(&a.ty)?;
    let name = match a.name {
        Some(n) => n,
        None => a
            .hf_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dam".into()),
    };
    std::fs::create_dir_all(&a.outdir).map_err(|e| Error::io(&a.outdir, e))?;
    let opts = dam::convert::ConvertOptions {
        image_prefix: a.image_prefix,
        progress: true,
    };
    let r = dam::convert::convert(&a.hf_dir, &a.outdir, ty, &name, &opts)?;
    println!("{}", r.llm_path.display());
    println!("{}", r.vision_path.display());
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    let ty = GgmlType::parse(&a.ty)?;
    let threads = cli_threads(a.threads)?;
    dam::convert::quantize(&a.input, &a.output, ty, threads)?;
    println!("{}", a.output.display());
    Ok(())
}

fn info(a: ModelArgs) -> Result<()> {
    let print_devices = || {
        let info = dam::backend_info();
        println!("cpu:    {}", info.simd.join(" "));
        for d in info.backends {
            println!(
                "device: {} ({}, {}; {:.1} of {:.1} GiB free)",
                d.name,
                d.kind,
                d.description,
                d.memory_free as f64 / (1u64 << 30) as f64,
                d.memory_total as f64 / (1u64 << 30) as f64
            );
        }
    };
    // Without a model: the compute devices only.
    if a.llm.is_none() && a.vision.is_none() && a.model.is_none() {
        print_devices();
        return Ok(());
    }
    let m = load_model(&a, false)?;
    let hp = &m.vision.hp;
    println!(
        "llm:    {} ({} layers, width {}, vocab {})",
        m.llm_path.display(),
        m.llm.n_layer(),
        m.llm.n_embd(),
        m.llm.n_vocab()
    );
    println!(
        "vision: {} ({}, {} px, patch {}, width {}, {} of {} layers, {} tokens/image)",
        m.vision_path.display(),
        m.vision.weight_type.name(),
        hp.image_size,
        hp.patch_size,
        hp.hidden,
        hp.used_layers(),
        hp.layers,
        hp.tokens_per_image()
    );
    print_devices();
    println!(
        "vision on: {}",
        m.vision.device.map_or_else(
            || format!("CPU ({} matrices repacked)", m.vision.n_repacked()),
            |d| d.name()
        )
    );
    println!("load:   {:.1} ms", m.load_ms);
    Ok(())
}

/// Little-endian bytes of a float/int slice, for safetensors.
fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

fn dump(a: DumpArgs) -> Result<()> {
    if a.image.len() != a.mask.len() {
        return Err(Error::InvalidArgument(format!(
            "{} images but {} masks",
            a.image.len(),
            a.mask.len()
        )));
    }
    let region = RegionArgs {
        image: a.image.clone(),
        mask: a.mask.clone(),
        bbox: None,
        scribble: None,
        brush: 0.0,
        points: None,
        alpha_mask: false,
        normalized: false,
    };
    let inputs = load_inputs(&region)?;
    let frames = inputs.frames()?;
    let model = load_model(&a.model, true)?;
    let mut session = model.session()?;
    let opts = DescribeOptions {
        query: a.query.clone(),
        max_new_tokens: a.max_tokens,
        ..DescribeOptions::greedy()
    };
    let detail = if a.debug {
        Detail::Debug
    } else {
        Detail::Features
    };
    let (cap, trace) = session.trace(&frames, &opts, detail)?;
    write_dump(&a.out, &model, &trace)?;
    let json = serde_json::json!({
        "frames": cap.frames.iter().map(|f| serde_json::json!({
            "focal_window_xyxy": f.window.to_array(),
            "context_provider_applied": f.context_applied,
            "mask_pixels": f.mask_pixels,
        })).collect::<Vec<_>>(),
        "dropped_frames": cap.dropped_frames,
        "prompt": trace.prompt,
        "prompt_ids": trace.prompt_ids,
        "output_ids": cap.tokens,
        "text": cap.text,
        "stopped_by_eos": cap.stopped_by_eos,
    });
    println!("{json}");
    Ok(())
}

fn write_dump(out: &Path, model: &Model, t: &Trace) -> Result<()> {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let hp = &model.vision.hp;
    let (s, n, c) = (
        hp.image_size as usize,
        hp.positions() as usize,
        hp.hidden as usize,
    );
    let (tk, h) = (hp.tokens_per_image() as usize, hp.llm_hidden as usize);
    let nf = t.views.len();
    // Single images have no frame axis (the fixtures' convention).
    let shape = |rest: &[usize]| -> Vec<usize> {
        if nf > 1 {
            std::iter::once(nf).chain(rest.iter().copied()).collect()
        } else {
            rest.to_vec()
        }
    };
    let cat = |f: &dyn Fn(usize) -> Vec<f32>| -> Vec<f32> { (0..nf).flat_map(f).collect() };
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut f32t = |name: &str, shape: Vec<usize>, data: Vec<f32>| {
        tensors.push((
            name.to_string(),
            Dtype::F32,
            shape,
            le(&data, f32::to_le_bytes),
        ));
    };
    f32t(
        "pixel_values",
        shape(&[8, s, s]),
        cat(&|k| [t.views[k].full.clone(), t.views[k].focal.clone()].concat()),
    );
    f32t(
        "full_features",
        shape(&[n, c]),
        cat(&|k| t.vision.full_features[k].clone()),
    );
    f32t(
        "crop_features",
        shape(&[n, c]),
        cat(&|k| t.vision.crop_features[k].clone()),
    );
    f32t(
        "projector_output",
        shape(&[tk, h]),
        cat(&|k| t.vision.embeddings[k].clone()),
    );
    // The spliced LLM input: token embedding rows, image rows at each -200.
    let mut embeds = Vec::new();
    let mut img = 0;
    for &id in &t.prompt_ids {
        if id == -200 {
            embeds.extend_from_slice(&t.vision.embeddings[img]);
            img += 1;
        } else {
            model.llm.embed_tokens(&[id as i32], &mut embeds)?;
        }
    }
    f32t("llm_inputs_embeds", vec![embeds.len() / h, h], embeds);
    let g = &t.generation;
    f32t(
        "first_logits",
        vec![g.first_logits.len()],
        g.first_logits.clone(),
    );
    let v = g.first_logits.len();
    f32t(
        "step_logits",
        vec![g.step_logits.len(), v],
        g.step_logits.concat(),
    );
    for (name, data) in &t.vision.debug {
        // Debug states are in batch order; the fixtures hold them for single images.
        f32t(name, vec![data.len() / c, c], data.clone());
    }
    let ids: Vec<i64> = g.tokens.iter().map(|&x| x as i64).collect();
    tensors.push((
        "prompt_ids".into(),
        Dtype::I64,
        vec![t.prompt_ids.len()],
        le(&t.prompt_ids, i64::to_le_bytes),
    ));
    tensors.push((
        "output_ids".into(),
        Dtype::I64,
        vec![ids.len()],
        le(&ids, i64::to_le_bytes),
    ));
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Backend(format!("{n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, &None)
        .map_err(|e| Error::Backend(format!("safetensors: {e}")))?;
    std::fs::write(out, bytes).map_err(|e| Error::io(out, e))
}

// ------------------------------------------------------------------ synth, bench

#[derive(Args)]
struct SynthArgs {
    /// dam-3b (DAM-3B's exact shapes, 7 GB at f16) or tiny (for tests).
    #[arg(long, default_value = "dam-3b")]
    preset: String,
    #[arg(long)]
    outdir: PathBuf,
    /// Weight type of the matrices: f32, f16, bf16 or q8_0.
    #[arg(long = "type", default_value = "f16")]
    ty: String,
    /// File name stem (default: synth-{preset}).
    #[arg(long)]
    name: Option<String>,
    /// Seed of the random weights (the files depend only on it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Write the headers only (sparse files of the full size, no weights).
    #[arg(long)]
    header_only: bool,
}

fn synth(a: SynthArgs) -> Result<()> {
    let preset = dam::convert::Preset::parse(&a.preset)?;
    let ty = GgmlType::parse(&a.ty)?;
    let name = a.name.unwrap_or_else(|| format!("synth-{}", preset.name()));
    let opts = dam::convert::SynthOptions {
        seed: a.seed,
        threads: a.threads,
        progress: true,
        header_only: a.header_only,
    };
    let r = dam::convert::synth(preset, &a.outdir, ty, &name, &opts)?;
    for f in &r.fallbacks {
        eprintln!("dam: note: {f}");
    }
    println!("{}", r.llm_path.display());
    println!("{}", r.vision_path.display());
    Ok(())
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, short = 'i')]
    image: PathBuf,
    #[arg(long)]
    mask: PathBuf,
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

fn bench(a: BenchArgs) -> Result<()> {
    use std::time::Instant;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let rgb = load_rgb(&a.image)?;
    let mask = load_mask(&a.mask)?;
    let threads = cli_threads(a.model.threads)?;
    let mut runs = Vec::new();
    let out = if a.vision_only {
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
        for k in 0..a.warmup + a.runs {
            let t0 = Instant::now();
            let views = dam::preprocess::make_views(
                &rgb,
                &mask,
                hp.image_size,
                hp.image_mean,
                hp.image_std,
            )?;
            let preprocess_ms = ms(t0);
            let t1 = Instant::now();
            let o = vm.encode(&mut backend, &[&views], Detail::Embeddings)?;
            let vision_ms = ms(t1);
            let finite = o.embeddings.iter().flatten().all(|x| x.is_finite());
            if k >= a.warmup {
                runs.push(serde_json::json!({
                    "preprocess_ms": preprocess_ms, "vision_ms": vision_ms,
                    "context_provider_applied": !views.focal_is_full, "finite": finite,
                }));
            }
        }
        serde_json::json!({
            "vision": vision, "vision_file_bytes": file_size(&vision),
            "vision_weight_type": vm.weight_type.name(),
            "vision_repacked_matrices": vm.n_repacked(),
            "threads": threads, "load_ms": load_ms, "runs": runs,
            "peak_rss_bytes": peak_rss(),
        })
    } else {
        let t0 = Instant::now();
        let model = load_model(&a.model, false)?;
        let load_ms = ms(t0);
        let t1 = Instant::now();
        let mut session = model.session()?;
        let session_ms = ms(t1);
        let image = rgb.view()?;
        let region = Region::Mask(mask.view()?);
        let opts = DescribeOptions {
            max_new_tokens: a.max_tokens,
            ..DescribeOptions::greedy()
        };
        for k in 0..a.warmup + a.runs {
            let t0 = Instant::now();
            let mut first: Option<f64> = None;
            let cap = session.describe_stream(&image, &region, &opts, &mut |_| {
                first.get_or_insert_with(|| ms(t0));
                true
            })?;
            let total_ms = ms(t0);
            let t = &cap.timings;
            if k >= a.warmup {
                runs.push(serde_json::json!({
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
                }));
            }
        }
        let mut batches = Vec::new();
        if a.regions > 1 {
            let mut regions = vec![region.clone()];
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
            for k in 0..a.warmup + a.runs {
                let t0 = Instant::now();
                let mut single = Vec::new();
                for r in &regions {
                    single.push(session.describe(&image, r, &opts)?);
                }
                let sequential_ms = ms(t0);
                let t1 = Instant::now();
                let many = session.describe_many(&image, &regions, &opts, &mut |_, _| true)?;
                let batched_ms = ms(t1);
                let equal = many
                    .captions
                    .iter()
                    .zip(&single)
                    .all(|(b, s)| b.tokens == s.tokens);
                let tokens: usize = single.iter().map(|c| c.tokens.len()).sum();
                let t = &many.timings;
                if k >= a.warmup {
                    batches.push(serde_json::json!({
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
        }
        serde_json::json!({
            "llm": model.llm_path, "vision": model.vision_path,
            "llm_file_bytes": file_size(&model.llm_path),
            "vision_file_bytes": file_size(&model.vision_path),
            "llm_weight_bytes_per_token": llm_bytes_per_token(&model.llm_path)?,
            "vision_weight_type": model.vision.weight_type.name(),
            "vision_repacked_matrices": model.vision.n_repacked(),
            "threads": threads, "load_ms": load_ms, "session_ms": session_ms,
            "ready_ms": load_ms + session_ms, "runs": runs, "batches": batches,
            "peak_rss_bytes": peak_rss(),
        })
    };
    println!("{out}");
    Ok(())
}
