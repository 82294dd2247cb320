//! The engine API: a `Model` (both GGUF files, loaded once, shared by
//! threads) and per-thread `Session`s that describe regions of images and
//! videos.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::image::ImageView;
use crate::llm::check::check_llm_file;
use crate::llm::generate::{cells_needed, generate, generate_many, prompt_len, Generation, Prompt};
use crate::llm::prompt::{conversation, prompt_ids, tokenize_prompt, user_text, PromptPiece};
use crate::preprocess::{make_views_of, summarize, Views};
use crate::region::{Region, EMPTY_REGION};
use crate::segmenter::{regions::region_mask, Segmenter};
use crate::sys::ggml::{self, Backend, Device};
use crate::sys::llama::{
    self, ContextParams, FlashAttn, KvType, LlamaContext, LlamaModel, LogLevel, TokenTable,
};
use crate::vision::{Detail, VisionModel, VisionOptions, VisionOutput};

pub use crate::request::{Caption, Captions, DescribeOptions, Frame, FrameInfo, Timings, Trace};

/// How to load a model and create its sessions.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelParams {
    /// CPU threads for the vision graph and the LLM (0 = all cores).
    pub threads: usize,
    /// Context length in tokens. 0: a session's context is made at its first
    /// call, for that call's cells rounded up to a multiple of 256, and grows
    /// to min(the LLM's training length, 4096) when a call needs more
    /// (`describe_many`, long answers).
    pub n_ctx: u32,
    /// KV cache precision (f16 like llama.cpp; f32 for reference parity;
    /// q8_0 for about half the memory, with flash attention).
    pub kv_type: KvType,
    pub flash_attn: FlashAttn,
    /// LLM layers to offload to the GPU: negative = all (the default), 0 =
    /// none. Ignored when ggml has no GPU (CPU-only builds, no device).
    pub n_gpu_layers: i32,
    /// The GPU (index among ggml's GPU devices, as `dam info` lists them)
    /// that holds the LLM layers and, with [`VisionDevice::Gpu`], the vision
    /// stage.
    pub main_gpu: i32,
    /// Where the vision stage runs.
    pub vision_device: VisionDevice,
    /// Copy the CPU's weight matrices that ggml multiplies faster in another
    /// layout (AMX tiles, repacked GEMM blocks) into it at load, for both
    /// files (llama.cpp's default; costs memory and load time).
    pub repack: bool,
    /// Regions [`Session::describe_many`] decodes in parallel (sequences
    /// sharing the context's `n_ctx` cells), 1..=64.
    pub n_seq_max: u32,
    /// A `dam-segmenter` GGUF file loaded with the model: it turns
    /// [`Region::Points`] and [`Region::SegmentedBox`] into masks (on the
    /// CPU, `threads` threads).
    pub segmenter: Option<PathBuf>,
}

/// Where the vision stage runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum VisionDevice {
    /// On `main_gpu` when ggml has a GPU (weights uploaded once at load),
    /// else on the CPU (one info log line says so).
    Gpu,
    /// On the CPU, weights read in place from the mapping.
    Cpu,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            threads: 0,
            n_ctx: 0,
            kv_type: KvType::F16,
            flash_attn: FlashAttn::Auto,
            n_gpu_layers: -1,
            main_gpu: 0,
            vision_device: VisionDevice::Gpu,
            repack: true,
            n_seq_max: 4,
            segmenter: None,
        }
    }
}

impl ModelParams {
    /// Settings for bit-faithful comparisons with the reference: f32 KV
    /// cache, no flash attention.
    pub fn reference() -> Self {
        ModelParams {
            kv_type: KvType::F32,
            flash_attn: FlashAttn::Off,
            ..Default::default()
        }
    }
    /// The least memory: CPU weights used in place from the files' mapping
    /// (no repacked copies) and a q8_0 KV cache (with flash attention).
    /// One caption of the q4_k pair peaks at 1.08x the files' size (see
    /// benches/RESULTS.md, Memory); slower matrix products where the CPU
    /// would repack.
    pub fn low_memory() -> Self {
        ModelParams {
            repack: false,
            kv_type: KvType::Q8_0,
            ..Default::default()
        }
    }

    /// The GPU to use: `main_gpu` among ggml's GPUs, or `None` (with one
    /// info log line) when there is none. A `main_gpu` beyond the GPUs
    /// present is an error.
    pub fn gpu(&self) -> Result<Option<Device>> {
        let gpus = ggml::gpu_devices();
        if gpus.is_empty() {
            if self.n_gpu_layers != 0 || self.vision_device == VisionDevice::Gpu {
                llama::log(LogLevel::Info, "dam: no GPU found; running on the CPU\n");
            }
            return Ok(None);
        }
        let i = usize::try_from(self.main_gpu)
            .ok()
            .filter(|&i| i < gpus.len())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "main_gpu {} is not one of the {} GPUs found (0..={})",
                    self.main_gpu,
                    gpus.len(),
                    gpus.len() - 1
                ))
            })?;
        Ok(Some(gpus[i]))
    }

    /// How the vision stage loads with these parameters.
    pub fn vision_options(&self) -> Result<VisionOptions> {
        Ok(self.vision_options_on(self.gpu()?))
    }

    /// As [`Self::vision_options`], `gpu` being [`Self::gpu`]'s answer.
    fn vision_options_on(&self, gpu: Option<Device>) -> VisionOptions {
        VisionOptions {
            device: gpu.filter(|_| self.vision_device == VisionDevice::Gpu),
            flash_attn: self.flash_attn,
            repack: self.repack,
        }
    }
}

/// The most CPU threads dam runs (ggml's GGML_MAX_N_THREADS: its thread
/// pools hold no more; OpenMP aborts or crashes with far more). Larger
/// counts are refused, never clamped.
pub const MAX_THREADS: usize = 512;

/// The thread count for `requested`: itself, or all cores for 0 (4 when
/// the OS cannot tell). More than [`MAX_THREADS`] is an error.
pub fn resolve_threads(requested: usize) -> Result<usize> {
    match requested {
        0 => Ok(std::thread::available_parallelism().map_or(4, |n| n.get().min(MAX_THREADS))),
        n if n <= MAX_THREADS => Ok(n),
        n => Err(Error::InvalidArgument(format!(
            "{n} threads requested; at most {MAX_THREADS}"
        ))),
    }
}

/// The stages [`Model::load_with_progress`] reports, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStage {
    /// Before anything is read.
    Start,
    /// The vision file is mapped and validated.
    VisionLoaded,
    /// llama.cpp has loaded the LLM file.
    LlmLoaded,
    /// The model is complete.
    Done,
}

/// Both halves of a DAM model. Immutable after loading; share it with `Arc`.
pub struct Model {
    pub vision: VisionModel,
    pub llm: Arc<LlamaModel>,
    pub llm_path: PathBuf,
    pub vision_path: PathBuf,
    pub params: ModelParams,
    pub load_ms: f64,
    /// Whether LLM layers live on a GPU (a GPU was found and n_gpu_layers
    /// is not 0).
    pub llm_on_gpu: bool,
    /// Whether llama.cpp uses the LLM file in place from a memory mapping
    /// (nothing repacked or uploaded) rather than reading it.
    pub llm_mapped: bool,
    /// The segmenter of `params.segmenter`, shared by the sessions (one
    /// segmentation at a time; its image embedding cache is shared too).
    pub segmenter: Option<Arc<Mutex<Segmenter>>>,
}

/// Finds both files of a model from one path: a folder holding exactly one
/// `*-llm-*.gguf` / `*-vision-*.gguf` pair, or either file of a pair.
pub fn find_model_files(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let is_kind = |p: &Path, kind: &str| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(kind) && n.ends_with(".gguf"))
    };
    if path.is_dir() {
        let entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let llm: Vec<_> = entries.iter().filter(|p| is_kind(p, "-llm-")).collect();
        let vis: Vec<_> = entries.iter().filter(|p| is_kind(p, "-vision-")).collect();
        return match (llm.as_slice(), vis.as_slice()) {
            ([l], [v]) => Ok(((*l).clone(), (*v).clone())),
            _ => Err(Error::InvalidArgument(format!(
                "{}: expected exactly one *-llm-*.gguf and one *-vision-*.gguf (found {} and {}); pass --llm and --vision",
                path.display(),
                llm.len(),
                vis.len()
            ))),
        };
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let swap = |from: &str, to: &str| path.with_file_name(name.replacen(from, to, 1));
    let (l, v) = if name.contains("-llm-") {
        (path.to_path_buf(), swap("-llm-", "-vision-"))
    } else if name.contains("-vision-") {
        (swap("-vision-", "-llm-"), path.to_path_buf())
    } else {
        return Err(Error::InvalidArgument(format!(
            "{}: not a model folder or a *-llm-*/*-vision-* file",
            path.display()
        )));
    };
    for p in [&l, &v] {
        if !p.is_file() {
            return Err(Error::Io(format!(
                "{}: no such file (the other half of the model)",
                p.display()
            )));
        }
    }
    Ok((l, v))
}

impl Model {
    /// Loads (memory-maps) both files. The LLM file is validated by dam's own
    /// GGUF reader before llama.cpp opens it.
    pub fn load(llm_path: &Path, vision_path: &Path, params: ModelParams) -> Result<Arc<Model>> {
        Self::load_with_progress(llm_path, vision_path, params, &mut |_| true)
    }

    /// As [`Model::load`], calling `progress` at each [`LoadStage`];
    /// returning false stops the load with `Error::Cancelled`.
    pub fn load_with_progress(
        llm_path: &Path,
        vision_path: &Path,
        params: ModelParams,
        progress: &mut dyn FnMut(LoadStage) -> bool,
    ) -> Result<Arc<Model>> {
        let mut step = |s| progress(s).then_some(()).ok_or(Error::Cancelled);
        step(LoadStage::Start)?;
        let t0 = Instant::now();
        resolve_threads(params.threads)?;
        params.kv_type.flash_attn_for(params.flash_attn)?;
        let gpu = params.gpu()?;
        let vision = VisionModel::load_with(vision_path, &params.vision_options_on(gpu))?;
        step(LoadStage::VisionLoaded)?;
        let file = check_llm_file(llm_path, vision.hp.llm_hidden)?;
        let table = TokenTable::new(file.map, &file.token_embd)?;
        llama::init_backend();
        // Mapping pays only when the weights are used in place. When ggml
        // repacks them (CPU) or uploads them (GPU), llama.cpp copies every
        // matrix out of the mapping and the mapped pages it read stay
        // resident beside the copies (it unmaps only the file's ends):
        // reading the file instead keeps one copy. A file of which the CPU
        // repacks nothing (f16 on AVX2) is used in place, so mapped.
        let use_mmap = gpu.is_none()
            && (!params.repack || !crate::sys::ggml::cpu_repacks_any(&file.matrices)?);
        let llm = Arc::new(LlamaModel::load_with_table(
            llm_path,
            &llama::ModelParams {
                n_gpu_layers: if gpu.is_some() {
                    params.n_gpu_layers
                } else {
                    0
                },
                main_gpu: params.main_gpu.max(0),
                use_extra_bufts: params.repack,
                use_mmap,
            },
            Some(table),
        )?);
        // Sessions make their context at the first call: refuse a cache the
        // LLM cannot have now.
        params.kv_type.check_model(&llm)?;
        if llm.n_embd() != vision.hp.llm_hidden as usize {
            return Err(Error::InvalidModel(format!(
                "the vision file projects to width {} but the LLM's width is {}: the files belong to different models",
                vision.hp.llm_hidden,
                llm.n_embd()
            )));
        }
        step(LoadStage::LlmLoaded)?;
        let segmenter = match &params.segmenter {
            Some(p) => Some(Arc::new(Mutex::new(Segmenter::load(p, params.threads)?))),
            None => None,
        };
        let model = Arc::new(Model {
            vision,
            llm,
            llm_path: llm_path.to_path_buf(),
            vision_path: vision_path.to_path_buf(),
            llm_on_gpu: gpu.is_some() && params.n_gpu_layers != 0,
            llm_mapped: use_mmap,
            params,
            load_ms: t0.elapsed().as_secs_f64() * 1e3,
            segmenter,
        });
        step(LoadStage::Done)?;
        Ok(model)
    }

    /// A new session (KV cache and compute buffers) for one thread at a time.
    pub fn session(self: &Arc<Self>) -> Result<Session> {
        let cancel = Arc::new(AtomicBool::new(false));
        let threads = resolve_threads(self.params.threads)?;
        // An explicit n_ctx is made now, as asked; the default is made at
        // the first call, for what that call needs, and grows with the
        // requests (Session::grow_ctx), up to min(training length, 4096).
        let (n_ctx, ctx_limit) = if self.params.n_ctx > 0 {
            (self.params.n_ctx, self.params.n_ctx)
        } else {
            (0, self.llm.n_ctx_train().clamp(1, 4096) as u32)
        };
        let ctx_params = ContextParams {
            n_ctx,
            n_batch: n_batch_for(n_ctx.max(1)),
            n_threads: threads as i32,
            type_k: self.params.kv_type,
            type_v: self.params.kv_type,
            flash_attn: self.params.kv_type.flash_attn_for(self.params.flash_attn)?,
            n_seq_max: self.params.n_seq_max,
            gpu_offload: self.llm_on_gpu,
        };
        Ok(Session {
            model: self.clone(),
            backend: self.vision.backend(threads, cancel.clone())?,
            ctx: match n_ctx {
                0 => None,
                _ => Some(LlamaContext::new(&self.llm, &ctx_params)?),
            },
            ctx_params,
            ctx_limit: ctx_limit as usize,
            cancel,
        })
    }

    /// The number of frames a video may have.
    pub fn max_frames(&self) -> usize {
        self.vision.hp.max_frames as usize
    }

    /// The mask of `region` on `image` (points and segmented boxes through
    /// the model's segmenter); empty masks are results.
    pub fn region_mask(&self, region: &Region, image: &ImageView) -> Result<crate::image::Mask> {
        region_mask(self.segmenter.as_deref(), region, image)
    }
}

/// The most regions one [`Session::describe_many`] call takes.
pub const MAX_REGIONS: usize = 64;

/// The most regions encoded in one vision graph (its compute buffer grows
/// with the batch).
pub const VISION_BATCH: usize = 8;

/// Cancels the session's running (or next) call from any thread.
#[derive(Clone, Debug)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Per-thread state: the LLM context (KV cache) and the vision compute
/// buffers. One call at a time; create one per thread.
pub struct Session {
    model: Arc<Model>,
    backend: Backend,
    /// The LLM context; made at the first call (default `n_ctx`) and remade
    /// larger when a request needs more cells (`grow_ctx`), so the KV cache
    /// follows what requests use.
    ctx: Option<LlamaContext>,
    /// What `ctx` was made with (its threads kept current).
    ctx_params: ContextParams,
    /// The most cells `ctx` may grow to.
    ctx_limit: usize,
    cancel: Arc<AtomicBool>,
}

/// Rows per llama_decode for a context of `n_ctx` cells: the whole context,
/// at most 2048.
fn n_batch_for(n_ctx: u32) -> u32 {
    n_ctx.min(2048)
}

/// A default session's first context is its first call's cells rounded up
/// to a multiple of this (llama.cpp pads its KV cache to 256 cells anyway).
/// A 4096-cell f16 KV cache of DAM-3B's LLM is 1.34 GB, more than its q4_k
/// weights; one short caption needs 256 cells (84 MB).
const CTX_STEP: usize = 256;

/// The context `Session::grow_ctx` made.
fn made(ctx: &mut Option<LlamaContext>) -> Result<&mut LlamaContext> {
    ctx.as_mut()
        .ok_or_else(|| Error::Backend("no LLM context".into()))
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl Session {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// A handle that cancels the running call (it returns `Error::Cancelled`
    /// within one graph computation or one token). A cancel that arrives
    /// between calls cancels the next one; the flag is cleared when a call
    /// returns, so the session stays usable.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }

    /// The LLM context's length now: 0 before a default session's first
    /// call (its context is made for that call's cells, a multiple of 256),
    /// then growing with the calls up to min(training length, 4096); see
    /// `ModelParams::n_ctx`.
    pub fn n_ctx(&self) -> usize {
        self.ctx.as_ref().map_or(0, LlamaContext::n_ctx)
    }

    /// Sets the CPU threads of the vision stage and the LLM (0 = all cores).
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        let threads = resolve_threads(threads)?;
        self.backend.set_threads(threads);
        if let Some(ctx) = &mut self.ctx {
            ctx.set_threads(threads)?;
        }
        self.ctx_params.n_threads = threads as i32;
        Ok(())
    }

    /// Makes the LLM context now for one image caption with `opts`, as the
    /// first such call would, so that its cost (KV cache, compute buffers)
    /// is paid before the first call (`dam bench` counts it in
    /// `session_ms`). A context that fits already is kept.
    pub fn prepare(&mut self, opts: &DescribeOptions) -> Result<()> {
        let (_, pieces) = self.prompt(1, opts)?;
        let image = self.model.vision.hp.tokens_per_image() as usize;
        let prompt = prompt_len(&pieces, |_| Ok(image))?;
        self.grow_ctx(prompt.saturating_add(opts.max_new_tokens))
    }

    /// Makes the LLM context fit a call needing `cells` (its prompts and
    /// answers): the first is made with `cells` rounded up to a multiple of
    /// [`CTX_STEP`]; one too small is remade at the next power of two. Both
    /// at most `ctx_limit`: what does not fit it is left to the
    /// generation's checks and waves.
    fn grow_ctx(&mut self, cells: usize) -> Result<()> {
        let want = cells.min(self.ctx_limit);
        let n = match &self.ctx {
            None => want.max(1).div_ceil(CTX_STEP) * CTX_STEP,
            Some(c) if want > c.n_ctx() => want.next_power_of_two(),
            Some(_) => 0,
        };
        if n > 0 {
            let n = n.min(self.ctx_limit) as u32;
            let params = ContextParams {
                n_ctx: n,
                n_batch: n_batch_for(n),
                ..self.ctx_params.clone()
            };
            // The new cache is made before the old one goes, so a failure
            // leaves the session as it was.
            self.ctx = Some(LlamaContext::new(&self.model.llm, &params)?);
            self.ctx_params = params;
        }
        Ok(())
    }

    /// Describes a region of one image.
    pub fn describe(
        &mut self,
        image: &ImageView,
        region: &Region,
        opts: &DescribeOptions,
    ) -> Result<Caption> {
        self.describe_stream(image, region, opts, &mut |_| true)
    }

    /// As `describe`, calling `on_text` with each complete UTF-8 piece of
    /// the caption; returning false stops generation.
    pub fn describe_stream(
        &mut self,
        image: &ImageView,
        region: &Region,
        opts: &DescribeOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Caption> {
        let frames = [Frame {
            image: *image,
            region: region.clone(),
        }];
        self.run(&frames, opts, Detail::Embeddings, false, on_text)
            .map(|(c, _)| c)
    }

    /// Describes the region followed through up to `max_frames` frames.
    /// Frames whose region is empty are dropped (listed in the caption);
    /// if all are empty, the call fails.
    pub fn describe_video(
        &mut self,
        frames: &[Frame],
        opts: &DescribeOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Caption> {
        self.run(frames, opts, Detail::Embeddings, false, on_text)
            .map(|(c, _)| c)
    }

    /// Runs a request keeping every intermediate (greedy options give the
    /// reference's tokens; logits are collected).
    pub fn trace(
        &mut self,
        frames: &[Frame],
        opts: &DescribeOptions,
        detail: Detail,
    ) -> Result<(Caption, Trace)> {
        let (c, t) = self.run(frames, opts, detail, true, &mut |_| true)?;
        Ok((c, t.ok_or_else(|| Error::Backend("no trace".into()))?))
    }

    /// Describes several regions of one image in one call: the vision stage
    /// runs as one batched graph (up to [`VISION_BATCH`] regions per graph)
    /// and the captions decode as parallel sequences of one LLM context
    /// (up to `ModelParams::n_seq_max` at once, within `n_ctx` cells; more
    /// run in waves). Each caption is what [`Session::describe`] gives for
    /// its region alone (each region has its own sampler, seeded with
    /// `opts.seed`): exactly with f32 weights; with reduced-precision
    /// weights some ggml CPU kernels (e.g. repacked q4_k, AVX-512 f16) round
    /// a batch of rows differently from one row, which can change a token
    /// where two are nearly tied, as in llama.cpp's own parallel decoding.
    /// `on_text(k, piece)` streams region `k`'s caption; returning false
    /// stops that region only. At most [`MAX_REGIONS`]
    /// regions; any invalid region fails the call (the message names it).
    /// Each caption's `preprocess_ms` and `vision_ms` are the whole batch's.
    pub fn describe_many(
        &mut self,
        image: &ImageView,
        regions: &[Region],
        opts: &DescribeOptions,
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Captions> {
        let frames: Vec<Frame> = regions
            .iter()
            .map(|r| Frame {
                image: *image,
                region: r.clone(),
            })
            .collect();
        self.describe_batch(&frames, opts, on_text)
    }

    /// As [`Session::describe_many`], each region on its own image: one
    /// caption per frame (not a video). Servers batch requests for different
    /// images through it.
    pub fn describe_batch(
        &mut self,
        frames: &[Frame],
        opts: &DescribeOptions,
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Captions> {
        // Checked here so that the message names no region.
        check_options(opts)?;
        // Capped: too many frames are refused by count, not cloned for.
        let opts = vec![opts.clone(); frames.len().min(MAX_REGIONS + 1)];
        self.describe_batch_each(frames, &opts, on_text)
    }

    /// As [`Session::describe_batch`], frame `k` answered with `opts[k]`:
    /// its own query, length instruction, token limit and sampling (seed
    /// included), so that requests of different clients share one engine
    /// call. Each caption is what [`Session::describe`] gives for its frame
    /// with its options alone. `opts` has one entry per frame.
    pub fn describe_batch_each(
        &mut self,
        frames: &[Frame],
        opts: &[DescribeOptions],
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Captions> {
        let r = self.describe_batch_inner(frames, opts, on_text);
        self.cancel.store(false, Ordering::Relaxed);
        r
    }

    fn describe_batch_inner(
        &mut self,
        frames: &[Frame],
        opts: &[DescribeOptions],
        on_text: &mut dyn FnMut(usize, &str) -> bool,
    ) -> Result<Captions> {
        if frames.is_empty() || frames.len() > MAX_REGIONS {
            return Err(Error::InvalidArgument(format!(
                "{} regions given; 1..={MAX_REGIONS} per call",
                frames.len()
            )));
        }
        if opts.len() != frames.len() {
            return Err(Error::InvalidArgument(format!(
                "{} options for {} regions: one per region",
                opts.len(),
                frames.len()
            )));
        }
        for (k, o) in opts.iter().enumerate() {
            check_options(o).map_err(|e| region_err(k, e))?;
        }
        // The prompts before the vision stage, so that a bad question fails
        // at once. Frames asking the same question share its tokens.
        let mut pieces: Vec<Vec<PromptPiece>> = Vec::new();
        let mut piece_of = Vec::with_capacity(opts.len());
        for (k, o) in opts.iter().enumerate() {
            let same = opts[..k]
                .iter()
                .position(|p| p.query == o.query && p.length == o.length);
            piece_of.push(match same {
                Some(j) => piece_of[j],
                None => {
                    pieces.push(self.prompt(1, o).map_err(|e| region_err(k, e))?.1);
                    pieces.len() - 1
                }
            });
        }
        let t0 = Instant::now();
        let mut views = Vec::with_capacity(frames.len());
        let mut infos = Vec::with_capacity(frames.len());
        for (k, f) in frames.iter().enumerate() {
            let (v, info) = self
                .region_views(&f.image, &f.region)
                .and_then(|v| v.ok_or_else(empty_region))
                .map_err(|e| region_err(k, e))?;
            views.push(v);
            infos.push(info);
        }
        let preprocess_ms = ms(t0);
        let (vis, vision_ms) = self.encode(&views, VISION_BATCH, Detail::Embeddings)?;
        let embeddings: Vec<&Vec<f32>> = vis.iter().flat_map(|v| &v.embeddings).collect();

        let gen_opts: Vec<_> = opts.iter().map(|o| o.generate_options(false)).collect();
        let images: Vec<[&[f32]; 1]> = embeddings.iter().map(|e| [e.as_slice()]).collect();
        let prompts: Vec<Prompt> = images
            .iter()
            .enumerate()
            .map(|(k, img)| Prompt {
                pieces: &pieces[piece_of[k]],
                images: img,
                opts: &gen_opts[k],
            })
            .collect();
        let t2 = Instant::now();
        let n_seq = self.ctx_params.n_seq_max as usize;
        let cells = cells_needed(&prompts, &self.model.llm, n_seq);
        self.grow_ctx(cells)?;
        let ctx = made(&mut self.ctx)?;
        let gens = generate_many(ctx, &self.model.llm, &prompts, on_text, &self.cancel)?;
        let llm_ms = ms(t2);
        let prefill_ms: f64 = gens.iter().map(|g| g.timings.prefill_ms).sum();
        let timings = Timings {
            preprocess_ms,
            vision_ms,
            prefill_ms,
            decode_ms: (llm_ms - prefill_ms).max(0.0),
            n_prompt_tokens: gens.iter().map(|g| g.timings.n_prompt_tokens).sum(),
            n_generated: gens.iter().map(|g| g.tokens.len()).sum(),
            n_decoded: gens.iter().map(|g| g.timings.n_decoded).sum(),
        };
        let captions = gens
            .iter()
            .zip(infos)
            .map(|(g, info)| caption_of(g, vec![info], Vec::new(), preprocess_ms, vision_ms))
            .collect();
        Ok(Captions { captions, timings })
    }

    /// Rasterises one region of an image and makes its two views (read from
    /// the image as it is, on the session's threads); `None` for a region that
    /// covers no pixel.
    fn region_views(
        &self,
        image: &ImageView,
        region: &Region,
    ) -> Result<Option<(Views, FrameInfo)>> {
        let hp = &self.model.vision.hp;
        let mask = self.model.region_mask(region, image)?;
        let Some(sum) = summarize(&mask)? else {
            return Ok(None);
        };
        let threads = self.ctx_params.n_threads.max(1) as usize;
        let (size, mean, std) = (hp.image_size, hp.image_mean, hp.image_std);
        let v = make_views_of(image, &mask, &sum, size, mean, std, threads)?;
        let info = FrameInfo {
            window: sum.window,
            mask_box: sum.bbox,
            mask_pixels: sum.pixels,
            context_applied: !v.focal_is_full,
        };
        Ok(Some((v, info)))
    }

    /// Runs the vision stage on `views`, `batch` per graph; gives one
    /// output per graph and the time taken.
    fn encode(
        &mut self,
        views: &[Views],
        batch: usize,
        detail: Detail,
    ) -> Result<(Vec<VisionOutput>, f64)> {
        let t = Instant::now();
        let mut out = Vec::with_capacity(views.len().div_ceil(batch.max(1)));
        for chunk in views.chunks(batch.max(1)) {
            let refs: Vec<&Views> = chunk.iter().collect();
            out.push(self.model.vision.encode(&mut self.backend, &refs, detail)?);
        }
        Ok((out, ms(t)))
    }

    /// The conversation for `n_views` images and its tokenized pieces.
    fn prompt(&self, n_views: usize, opts: &DescribeOptions) -> Result<(String, Vec<PromptPiece>)> {
        let hp = &self.model.vision.hp;
        let default_q = if n_views > 1 {
            &hp.default_video_query
        } else {
            &hp.default_query
        };
        let mut query = opts.query.clone().unwrap_or_else(|| default_q.clone());
        if query.contains("<image>") {
            return Err(Error::InvalidArgument(
                "the query must not contain <image>: dam places the image".into(),
            ));
        }
        if let Some(l) = &opts.length {
            query = l.apply(&query);
        }
        let prompt = conversation(&user_text(
            &hp.image_prefix,
            &hp.video_prefix,
            n_views,
            &query,
        ));
        let pieces = tokenize_prompt(&self.model.llm, &prompt)?;
        Ok((prompt, pieces))
    }

    fn run(
        &mut self,
        frames: &[Frame],
        opts: &DescribeOptions,
        detail: Detail,
        keep: bool,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(Caption, Option<Trace>)> {
        let r = self.run_inner(frames, opts, detail, keep, on_text);
        // A cancel applies to one call; the session stays usable.
        self.cancel.store(false, Ordering::Relaxed);
        r
    }

    fn run_inner(
        &mut self,
        frames: &[Frame],
        opts: &DescribeOptions,
        detail: Detail,
        keep: bool,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(Caption, Option<Trace>)> {
        let max = self.model.max_frames();
        if frames.is_empty() {
            return Err(Error::InvalidArgument("no frame given".into()));
        }
        if frames.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} frames given, the model takes at most {max}",
                frames.len()
            )));
        }
        check_options(opts)?;
        let video = frames.len() > 1;

        // Regions -> masks -> views; empty regions drop a video frame.
        let t0 = Instant::now();
        let mut views = Vec::new();
        let mut infos = Vec::new();
        let mut dropped = Vec::new();
        for (k, f) in frames.iter().enumerate() {
            match self.region_views(&f.image, &f.region) {
                Ok(Some((v, info))) => {
                    views.push(v);
                    infos.push(info);
                }
                Ok(None) if video => dropped.push(k),
                Ok(None) => return Err(empty_region()),
                Err(e) => return Err(if video { frame_err(k, e) } else { e }),
            }
        }
        if views.is_empty() {
            return Err(Error::InvalidRegion(format!(
                "every frame's region is empty ({EMPTY_REGION})"
            )));
        }
        let preprocess_ms = ms(t0);

        // One graph for all frames (a trace keeps its intermediates).
        let (vis, vision_ms) = self.encode(&views, views.len(), detail)?;
        let vis = vis
            .into_iter()
            .next()
            .ok_or_else(|| Error::Backend("no vision output".into()))?;

        let (prompt, pieces) = self.prompt(views.len(), opts)?;
        let images: Vec<&[f32]> = vis.embeddings.iter().map(|e| e.as_slice()).collect();
        let gen_opts = opts.generate_options(keep);
        let one = Prompt {
            pieces: &pieces,
            images: &images,
            opts: &gen_opts,
        };
        let cells = cells_needed(&[one], &self.model.llm, 1);
        self.grow_ctx(cells)?;
        let ctx = made(&mut self.ctx)?;
        let g = generate(
            ctx,
            &self.model.llm,
            &pieces,
            &images,
            &gen_opts,
            on_text,
            &self.cancel,
        )?;
        let caption = caption_of(&g, infos, dropped, preprocess_ms, vision_ms);
        let trace = keep.then(|| Trace {
            prompt_ids: prompt_ids(&pieces),
            views,
            vision: vis,
            prompt,
            pieces,
            generation: g,
        });
        Ok((caption, trace))
    }
}

/// The caption of one generation, with the shared stages' times.
fn caption_of(
    g: &Generation,
    frames: Vec<FrameInfo>,
    dropped_frames: Vec<usize>,
    preprocess_ms: f64,
    vision_ms: f64,
) -> Caption {
    Caption {
        text: g.text.clone(),
        tokens: g.tokens.clone(),
        stopped_by_eos: g.stopped_by_eos,
        frames,
        dropped_frames,
        timings: Timings {
            preprocess_ms,
            vision_ms,
            prefill_ms: g.timings.prefill_ms,
            decode_ms: g.timings.decode_ms,
            n_prompt_tokens: g.timings.n_prompt_tokens,
            n_generated: g.tokens.len(),
            n_decoded: g.timings.n_decoded,
        },
    }
}

fn empty_region() -> Error {
    Error::InvalidRegion(EMPTY_REGION.into())
}

fn check_options(opts: &DescribeOptions) -> Result<()> {
    if opts.max_new_tokens == 0 {
        return Err(Error::InvalidArgument(
            "max_new_tokens must be at least 1".into(),
        ));
    }
    if !opts.temperature.is_finite()
        || opts.temperature < 0.0
        || !(opts.top_p > 0.0 && opts.top_p <= 1.0)
    {
        return Err(Error::InvalidArgument(format!(
            "temperature {} / top_p {} out of range (temperature >= 0, 0 < top_p <= 1)",
            opts.temperature, opts.top_p
        )));
    }
    Ok(())
}

fn region_err(k: usize, e: Error) -> Error {
    match e {
        Error::InvalidRegion(m) => Error::InvalidRegion(format!("region {k}: {m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("region {k}: {m}")),
        e => e,
    }
}

fn frame_err(k: usize, e: Error) -> Error {
    match e {
        Error::InvalidRegion(m) => Error::InvalidRegion(format!("frame {k}: {m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("frame {k}: {m}")),
        e => e,
    }
}
