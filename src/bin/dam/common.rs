//! Flags several subcommands share (the model to load, where a converted
//! pair goes) and model loading.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use dam::llama::{FlashAttn, KvType};
use dam::model::MAX_THREADS;
use dam::{find_model_files, Error, Model, ModelParams, Result, VisionDevice};

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// The LLM file (*-llm-*.gguf).
    #[arg(long)]
    pub llm: Option<PathBuf>,
    /// The vision file (*-vision-*.gguf).
    #[arg(long)]
    pub vision: Option<PathBuf>,
    /// A folder with one pair of files, or either file of a pair.
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// KV cache type (q8_0: half an f16 cache, needs flash attention).
    #[arg(long, value_enum, default_value_t = KvType::F16)]
    pub kv_type: KvType,
    /// The least memory: --no-repack and --kv-type q8_0 (peak RSS about
    /// 1.1x the files' size for one caption).
    #[arg(long, conflicts_with_all = ["kv_type", "no_repack"])]
    pub low_memory: bool,
    /// Flash attention.
    #[arg(long, value_enum, default_value_t = FlashAttn::Auto)]
    pub flash_attn: FlashAttn,
    /// Context length (0 = the model's, at most 4096).
    #[arg(long, default_value_t = 0)]
    pub ctx: u32,
    /// LLM layers on the GPU (negative = all; 0 = none). Without a GPU, 0.
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", default_value_t = -1, allow_hyphen_values = true)]
    pub n_gpu_layers: i32,
    /// The GPU to use (index in `dam info`'s list of GPUs).
    #[arg(long, default_value_t = 0)]
    pub main_gpu: i32,
    /// Where the vision stage runs (gpu: the main GPU when there is one).
    #[arg(long, value_enum, default_value_t = VisionDevice::Gpu)]
    pub vision_device: VisionDevice,
    /// Keep every CPU weight in the file's layout (no AMX / repacked copies:
    /// less memory, slower matrix products).
    #[arg(long)]
    pub no_repack: bool,
    /// A dam-segmenter GGUF (`dam convert` of a SAM checkpoint): --points
    /// and --segment-box regions become its masks.
    #[arg(long, value_name = "S.gguf")]
    pub segmenter: Option<PathBuf>,
}

/// Where `convert` and `synth` write the model pair, and its weight type.
#[derive(Args)]
pub struct OutputArgs {
    #[arg(long)]
    pub outdir: PathBuf,
    /// Weight type of the matrices: f32, f16, bf16 or q8_0.
    #[arg(long = "type", default_value = "f16")]
    pub ty: String,
}

/// `--threads`: 0 = all cores; more than the engine's limit is refused.
pub fn cli_threads(n: usize) -> Result<usize> {
    dam::model::resolve_threads(n)
        .map_err(|_| Error::InvalidArgument(format!("--threads {n}: at most {MAX_THREADS}")))
}

pub fn load_model(a: &ModelArgs, reference: bool) -> Result<Arc<Model>> {
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
pub fn model_params(a: &ModelArgs, reference: bool) -> Result<ModelParams> {
    let mut p = if reference {
        ModelParams::reference()
    } else if a.low_memory {
        ModelParams::low_memory()
    } else {
        ModelParams::default()
    };
    p.threads = a.threads;
    p.n_gpu_layers = a.n_gpu_layers;
    p.main_gpu = a.main_gpu;
    p.repack = !(a.no_repack || a.low_memory);
    p.vision_device = a.vision_device;
    p.n_ctx = a.ctx;
    p.segmenter = a.segmenter.clone();
    if !reference {
        p.flash_attn = a.flash_attn;
        if !a.low_memory {
            p.kv_type = a.kv_type;
        }
    }
    Ok(p)
}
