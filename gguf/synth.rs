//! Synthetic DAM models: both GGUF files with a real model's shapes and
//! hyper-parameters (every key the converter writes, the same file names and
//! layout) but seeded random weights, for performance work without the
//! licensed checkpoint.
//!
//! - [`Preset::Dam3b`] has exactly DAM-3B's shapes (`shared/MODEL.md`):
//!   SigLIP-so400m (27 layers of width 1152, 16 heads, MLP 4304, 384 px,
//!   patch 14, select layer -2), 27 cross-attention blocks, the 4608 -> 2560
//!   -> 2560 projector, and the Llama of width 2560 (32 layers, 20 heads, 20
//!   KV heads, MLP 6912, vocabulary 32000, 4096 positions, RoPE base 10000,
//!   RMS epsilon 1e-5). As with a real conversion, the files hold only the
//!   26 tower layers and blocks that run.
//! - [`Preset::Tiny`] has small widths (and the same 32000-entry
//!   vocabulary) for tests.
//!
//! Weights: matrices N(0, 1/sqrt(fan_in)), norm weights 1, biases and the
//! position embedding N(0, 0.02), the cross-attention gates 1, the token
//! embedding N(0, 1); the output head likewise but with the rows of
//! `<unk>`, `<s>` and `</s>` zero, so greedy decoding never ends early
//! (random logits otherwise hit EOS at some point) and fixed-length
//! benchmarks measure what they ask for. Activations stay O(1) through
//! every layer. Values come from splitmix64 + Box-Muller, seeded per tensor
//! (from its name) and per block of 16384 values, so the files depend only
//! on the seed, never on the thread count.
//!
//! The vocabulary is a valid SentencePiece-style one that llama.cpp's SPM
//! tokenizer uses as it would Llama's: `<unk>`, `<s>`, `</s>`, the 256
//! byte-fallback tokens `<0x00>`..`<0xFF>` (ids 3..258, as in Llama), then
//! normal pieces with decreasing scores: `▁`, every printable ASCII
//! character alone and after `▁`, the prefixes of the words of DAM's prompts
//! and of common caption words (so prompts take about one token per word,
//! as with Llama's vocabulary), then two- and three-letter pieces.
//!
//! Tensors are generated and written one at a time (peak memory is about
//! two copies of the largest tensor, the 32000 x 2560 token embedding).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::llm::{self, LlmHparams, LlmPlan, Vocab};
use super::spm::piece_type;
use super::vision::{self, VisionPlan};
use super::{output_names, write_atomically, Fallback, TensorSource, CONVERT_TYPES};
use crate::error::{Error, Result};
use crate::llm::tensors::expand;
use crate::sys::gguf::GgufWriter;
use crate::sys::GgmlType;
use crate::weights::VisionHparams;

/// Which model's shapes to synthesize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// NVIDIA DAM-3B (3.5 B parameters; 7.0 GB at f16).
    Dam3b,
    /// A few hundred thousand parameters, for tests.
    Tiny,
}

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::Dam3b, Preset::Tiny];

    /// `dam-3b` or `tiny`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Dam3b => "dam-3b",
            Preset::Tiny => "tiny",
        }
    }

    pub fn parse(s: &str) -> Result<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown preset {s:?} (dam-3b or tiny)")))
    }

    /// The LLM's hyper-parameters.
    pub fn llm_hparams(self) -> LlmHparams {
        let (hidden, layers, heads, ff, context) = match self {
            Preset::Dam3b => (2560, 32, 20, 6912, 4096),
            Preset::Tiny => (64, 2, 4, 192, 1024),
        };
        LlmHparams {
            vocab: VOCAB_SIZE,
            hidden,
            layers,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            ff,
            context,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            tie_embeddings: false,
        }
    }

    /// The vision file's hyper-parameters (what the converter reads from
    /// DAM-3B's configs).
    pub fn vision_hparams(self) -> VisionHparams {
        // (image, hidden, heads, layers, ff)
        let (image_size, hidden, heads, layers, ff) = match self {
            Preset::Dam3b => (384, 1152, 16, 27, 4304),
            Preset::Tiny => (70, 64, 4, 3, 128),
        };
        VisionHparams {
            image_size,
            patch_size: 14,
            hidden,
            hidden_in: hidden,
            heads,
            layers,
            ff,
            eps: 1e-6,
            act: "gelu_pytorch_tanh".into(),
            select_layer: -2,
            mask_channels: 1,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ctx_type: "cross_attn_end_to_all".into(),
            ctx_layers: layers,
            ctx_heads: heads,
            ctx_ff: ff,
            ctx_eps: 1e-6,
            ctx_act: "gelu_pytorch_tanh".into(),
            ctx_masked: false,
            proj_type: "mlp_downsample".into(),
            proj_eps: vision::PROJ_EPS,
            llm_hidden: self.llm_hparams().hidden,
            conv_mode: "v1".into(),
            image_prefix: String::new(),
            video_prefix: vision::VIDEO_PREFIX.into(),
            default_query: vision::DEFAULT_QUERY.into(),
            default_video_query: vision::DEFAULT_VIDEO_QUERY.into(),
            max_frames: 8,
        }
    }
}

/// The vocabulary size of both presets (Llama's).
pub const VOCAB_SIZE: u32 = 32000;

/// Options of [`synth`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthOptions {
    pub seed: u64,
    /// Threads generating and converting values (0 = all cores). The
    /// files do not depend on it.
    pub threads: usize,
    /// Show a `[k/n] tensor` progress line on stderr (only on a terminal).
    pub progress: bool,
    /// Write only the headers: each file gets its full size as a sparse
    /// file whose tensor data reads as zeros and takes no disk space (for
    /// checking a full-size header quickly; such files are not a model).
    pub header_only: bool,
}

/// One tensor of a synthesized file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthTensor {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order (row length first).
    pub ne: Vec<u64>,
    /// Data bytes (without alignment padding).
    pub nbytes: u64,
}

/// What [`synth`] will write: hyper-parameters and both tensor tables.
pub struct SynthPlan {
    pub preset: Preset,
    pub ty: GgmlType,
    pub llm: LlmHparams,
    /// As written: MLP widths padded for `ty` (`VisionHparams::padded_for`).
    pub vision: VisionHparams,
    pub llm_tensors: Vec<SynthTensor>,
    pub vision_tensors: Vec<SynthTensor>,
    /// Matrices whose rows do not fit `ty` (as in `convert`).
    pub fallbacks: Vec<Fallback>,
    lplan: LlmPlan,
    vplan: VisionPlan,
}

impl SynthPlan {
    /// Parameters in the LLM file.
    pub fn llm_params(&self) -> u64 {
        self.llm_tensors
            .iter()
            .map(|t| t.ne.iter().product::<u64>())
            .sum()
    }
    /// Parameters in the vision file.
    pub fn vision_params(&self) -> u64 {
        self.vision_tensors
            .iter()
            .map(|t| t.ne.iter().product::<u64>())
            .sum()
    }
    /// Tensor data bytes of the LLM file.
    pub fn llm_data_bytes(&self) -> u64 {
        self.llm_tensors.iter().map(|t| t.nbytes).sum()
    }
    /// Tensor data bytes of the vision file.
    pub fn vision_data_bytes(&self) -> u64 {
        self.vision_tensors.iter().map(|t| t.nbytes).sum()
    }
}

/// What [`synth`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthReport {
    pub llm_path: PathBuf,
    pub vision_path: PathBuf,
    pub llm_tensors: usize,
    pub vision_tensors: usize,
    /// File sizes in bytes.
    pub llm_bytes: u64,
    pub vision_bytes: u64,
    pub fallbacks: Vec<Fallback>,
}

fn conv(m: String) -> Error {
    Error::Convert(m)
}

/// Plans both files of `preset` with matrices of type `ty` (f32, f16, bf16
/// or q8_0, like `convert`).
pub fn synth_plan(preset: Preset, ty: GgmlType) -> Result<SynthPlan> {
    if !CONVERT_TYPES.contains(&ty) {
        return Err(Error::Convert(format!(
            "synth writes f32, f16, bf16 or q8_0, not {}; synthesize f16, then quantize",
            ty.name()
        )));
    }
    let mut fallbacks = Vec::new();

    // Vision: the shared table, as the converter plans it.
    let vhp = preset.vision_hparams();
    vhp.validate()?;
    // The file's MLP widths may grow with zero units, as in a conversion.
    let fhp = vhp.padded_for(ty);
    let vtensors: Vec<vision::Planned> = vision::table(&vhp)?
        .into_iter()
        .map(|e| vision::planned(e, &vhp, &fhp, ty, &mut fallbacks))
        .collect();
    let vplan = VisionPlan {
        hp: fhp.clone(),
        ty,
        tensors: vtensors,
        ignored: Vec::new(),
        fallbacks: fallbacks.clone(),
    };

    // LLM: the shared table in the converter's order.
    let hp = preset.llm_hparams();
    let mut lfall = Vec::new();
    let dims = hp.dims();
    // Random values need no Q/K permutation.
    let ltensors: Vec<llm::Planned> = expand(hp.layers as usize)
        .into_iter()
        .map(|n| llm::planned(n.gguf, n.hf, n.def, &dims, ty, &mut lfall))
        .collect();
    let (tokens, scores, types) = synth_vocab(hp.vocab)?;
    let vocab = Vocab {
        tokens,
        scores,
        types,
        bos: 1,
        eos: 2,
        unk: 0,
        pad: Some(0),
        add_bos: true,
        add_eos: false,
        add_space_prefix: true,
        remove_extra_whitespaces: false,
    };
    for f in &lfall {
        super::merge_fallbacks(&mut fallbacks, std::slice::from_ref(f));
    }
    let lplan = LlmPlan {
        hp: hp.clone(),
        ty,
        vocab,
        tensors: ltensors,
        ignored: Vec::new(),
        fallbacks: lfall,
    };
    let table = |name: &str, ty: GgmlType, ne: &[u64]| -> Result<SynthTensor> {
        let nbytes = ty.nbytes(ne).ok_or_else(|| {
            conv(format!(
                "internal: {name} {ne:?} does not fit {}",
                ty.name()
            ))
        })?;
        Ok(SynthTensor {
            name: name.to_string(),
            ty,
            ne: ne.to_vec(),
            nbytes,
        })
    };
    Ok(SynthPlan {
        preset,
        ty,
        llm: hp,
        vision: fhp,
        llm_tensors: lplan
            .tensors
            .iter()
            .map(|t| table(&t.gguf, t.ty, &t.ne))
            .collect::<Result<_>>()?,
        vision_tensors: vplan
            .tensors
            .iter()
            .map(|t| table(&t.gguf, t.ty, &t.ne))
            .collect::<Result<_>>()?,
        fallbacks,
        lplan,
        vplan,
    })
}

/// Writes `outdir/{name}-llm-{ty}.gguf` and `outdir/{name}-vision-{ty}.gguf`
/// (the names `convert` uses) for `preset` with seeded random weights. Each
/// file is written under a temporary name and renamed when complete.
pub fn synth(
    preset: Preset,
    outdir: &Path,
    ty: GgmlType,
    name: &str,
    opts: &SynthOptions,
) -> Result<SynthReport> {
    if name.is_empty() || name.contains(['/', '\\']) || name.contains('\0') {
        return Err(Error::InvalidArgument(format!("bad model name {name:?}")));
    }
    let plan = synth_plan(preset, ty)?;
    std::fs::create_dir_all(outdir).map_err(|e| Error::io(outdir, e))?;
    let (lname, vname) = output_names(name, ty);
    let (llm_path, vision_path) = (outdir.join(lname), outdir.join(vname));
    let threads = if opts.threads > 0 {
        opts.threads
    } else {
        super::default_threads()
    };
    let src = SynthSource::new(&plan, opts.seed, threads)?;
    let (vision_bytes, llm_bytes) = if opts.header_only {
        (
            write_atomically(&vision_path, |tmp| {
                header_only(vision::header(&plan.vplan, name)?, tmp)
            })?,
            write_atomically(&llm_path, |tmp| {
                header_only(llm::header(&plan.lplan, name)?, tmp)
            })?,
        )
    } else {
        (
            write_atomically(&vision_path, |tmp| {
                vision::write(&src, &plan.vplan, name, tmp, opts.progress)
            })?
            .bytes,
            write_atomically(&llm_path, |tmp| {
                llm::write(&src, &plan.lplan, name, tmp, opts.progress)
            })?
            .bytes,
        )
    };
    Ok(SynthReport {
        llm_path,
        vision_path,
        llm_tensors: plan.llm_tensors.len(),
        vision_tensors: plan.vision_tensors.len(),
        llm_bytes,
        vision_bytes,
        fallbacks: plan.fallbacks.clone(),
    })
}

/// GGUF's default data alignment (the writer pads every tensor to it).
const ALIGNMENT: u64 = 32;

/// Writes the header and extends the file to its full size without writing
/// the data (a sparse file); checks the result parses. Returns the size.
fn header_only(w: GgufWriter, path: &Path) -> Result<u64> {
    let data: u64 = w
        .tensors()
        .iter()
        .map(|t| t.nbytes.div_ceil(ALIGNMENT) * ALIGNMENT)
        .sum();
    // Dropping the data writer flushes the header.
    drop(w.begin(path)?);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let header = f.metadata().map_err(|e| Error::io(path, e))?.len();
    f.set_len(header + data).map_err(|e| Error::io(path, e))?;
    drop(f);
    let map = crate::sys::MappedFile::open(path)?;
    crate::gguf_file::GgufHeader::parse(map.bytes(), &path.display().to_string())?;
    Ok(header + data)
}

// ------------------------------------------------------------------ vocabulary

/// Words whose prefixes become pieces: DAM's prompts and common caption
/// words.
const EXTRA_WORDS: &str =
    "Image Video USER ASSISTANT in about more than words sentences sentence word \
    a an the of with and or is are on at to from by its it this that which has have there \
    white black red blue green yellow orange purple pink brown gray grey silver golden dark light \
    small large big tall short long wide narrow round square rectangular circular oval flat \
    object shape color colour surface texture pattern edge edges corner side front back top \
    bottom left right middle center centre background foreground person man woman child people \
    wearing shirt jacket hair face hand hands head body arm arms leg legs dog cat bird animal \
    car vehicle wheel wheels window windows door building wall floor table chair plate cup \
    bottle glass wooden metal metallic plastic fabric leather stone smooth rough shiny matte \
    slightly appears visible partially covered features design handle frame part region area \
    image picture photo scene view positioned placed standing sitting holding looking near \
    next below above under over between behind along across inside outside while also has";

/// The vocabulary of the synthetic models: `n` (tokens, scores, types) in
/// id order. See the module documentation. Every entry is distinct.
pub fn synth_vocab(n: u32) -> Result<(Vec<String>, Vec<f32>, Vec<i32>)> {
    let n = n as usize;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![
        piece_type::UNKNOWN,
        piece_type::CONTROL,
        piece_type::CONTROL,
    ];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(piece_type::BYTE);
    }
    let fixed = tokens.len();
    if n < fixed + 1 {
        return Err(conv(format!(
            "a vocabulary of {n} cannot hold the {fixed} special and byte tokens"
        )));
    }
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    let mut normal: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if normal.len() + fixed < n && !seen.contains(&s) {
            seen.insert(s.clone());
            normal.push(s);
        }
    };
    const SP: char = '\u{2581}';
    push(SP.to_string());
    let printable: Vec<char> = (33u8..=126).map(char::from).collect();
    for &c in &printable {
        push(c.to_string());
    }
    for &c in &printable {
        push(format!("{SP}{c}"));
    }
    // Word prefixes (each one's own prefix comes first, so SentencePiece's
    // pairwise merges can reach the whole word).
    let text = [
        crate::llm::prompt::SYSTEM,
        crate::llm::prompt::DEFAULT_QUERY,
        crate::llm::prompt::DEFAULT_VIDEO_QUERY,
        EXTRA_WORDS,
    ]
    .join(" ");
    let mut words: Vec<&str> = Vec::new();
    for w in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        if w.len() >= 2 && !words.contains(&w) {
            words.push(w);
        }
    }
    for w in &words {
        for k in 2..=w.len() {
            push(format!("{SP}{}", &w[..k]));
        }
    }
    for w in &words {
        for k in 2..=w.len() {
            push(w[..k].to_string());
        }
    }
    let letters: Vec<char> = ('a'..='z').collect();
    for &a in &letters {
        for &b in &letters {
            push(format!("{a}{b}"));
        }
    }
    for &a in &letters {
        for &b in &letters {
            push(format!("{SP}{a}{b}"));
        }
    }
    for &a in &letters {
        for &b in &letters {
            for &c in &letters {
                push(format!("{SP}{a}{b}{c}"));
            }
        }
    }
    for &a in &letters {
        for &b in &letters {
            for &c in &letters {
                push(format!("{a}{b}{c}"));
            }
        }
    }
    if normal.len() + fixed < n {
        return Err(conv(format!(
            "the synthetic vocabulary has at most {} entries, not {n}",
            normal.len() + fixed
        )));
    }
    let mut scores = vec![0f32; fixed];
    for (k, p) in normal.into_iter().enumerate() {
        tokens.push(p);
        scores.push(-(k as f32));
        types.push(piece_type::NORMAL);
    }
    Ok((tokens, scores, types))
}

// ------------------------------------------------------------------ weights

/// How one tensor's values are drawn.
#[derive(Clone, Debug, PartialEq)]
enum Init {
    /// N(0, std).
    Normal(f32),
    /// Every value equal.
    Const(f32),
    /// N(0, std) with the given rows zero.
    NormalZeroRows(f32, Vec<usize>),
}

struct Gen {
    init: Init,
    numel: usize,
    /// Elements per row (PyTorch's last dimension).
    row: usize,
    seed: u64,
}

/// The synthetic [`TensorSource`]: values by (folder, checkpoint name).
struct SynthSource {
    gens: HashMap<(String, String), Gen>,
    threads: usize,
}

/// Standard deviation of biases and the position embedding.
const SMALL: f32 = 0.02;

/// The initialisation of a tensor from its GGUF name and ggml shape.
fn init_for(gguf: &str, ne: &[u64], special_rows: &[usize]) -> Init {
    let fan_in = |ne: &[u64]| -> f32 {
        let outer = ne.last().copied().unwrap_or(1).max(1);
        let n: u64 = ne.iter().product();
        ((n / outer).max(1) as f32).sqrt().recip()
    };
    if gguf.ends_with(".bias") || gguf == "v.position_embd.weight" {
        Init::Normal(SMALL)
    } else if gguf.ends_with("_factor") {
        Init::Const(1.0)
    } else if ne.len() == 1 {
        // Norm weights (LayerNorm and RMSNorm).
        Init::Const(1.0)
    } else if gguf == "token_embd.weight" {
        Init::Normal(1.0)
    } else if gguf == "output.weight" {
        Init::NormalZeroRows(fan_in(ne), special_rows.to_vec())
    } else {
        Init::Normal(fan_in(ne))
    }
}

/// FNV-1a of a name (tensor seeds).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64: the output for state `z` (the next state is `z + 0x9E37...`).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Values per independently seeded block.
const BLOCK: usize = 1 << 14;

/// Fills `out` with N(0, std) values from splitmix64 (state `seed`) and
/// Box-Muller (24-bit uniforms: |z| <= 5.8 std).
fn normal_block(out: &mut [f32], std: f32, seed: u64) {
    let mut state = seed;
    let scale = 1.0 / (1u32 << 24) as f32;
    let mut chunks = out.chunks_exact_mut(2);
    let mut next = || {
        let x = mix(state);
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let u1 = ((x >> 40) as f32 + 1.0) * scale; // (0, 1]
        let u2 = ((x & 0xFF_FFFF) as f32) * scale; // [0, 1)
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
        (r * c, r * s)
    };
    for pair in &mut chunks {
        let (a, b) = next();
        pair[0] = a;
        pair[1] = b;
    }
    if let [last] = chunks.into_remainder() {
        *last = next().0;
    }
}

/// N(0, std) values, block `b` seeded by `mix(seed ^ b)`, generated on up
/// to `threads` threads (the result does not depend on `threads`).
fn normal(n: usize, std: f32, seed: u64, threads: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    let blocks = n.div_ceil(BLOCK);
    let threads = threads.clamp(1, blocks.max(1));
    let per = blocks.div_ceil(threads);
    let fill = |first_block: usize, part: &mut [f32]| {
        for (k, blk) in part.chunks_mut(BLOCK).enumerate() {
            let b = (first_block + k) as u64;
            normal_block(blk, std, mix(seed ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03)));
        }
    };
    if threads == 1 {
        fill(0, &mut out);
    } else {
        std::thread::scope(|s| {
            for (t, part) in out.chunks_mut(per * BLOCK).enumerate() {
                let fill = &fill;
                s.spawn(move || fill(t * per, part));
            }
        });
    }
    out
}

impl SynthSource {
    fn new(plan: &SynthPlan, seed: u64, threads: usize) -> Result<SynthSource> {
        let v = &plan.lplan.vocab;
        let special: Vec<usize> = [v.unk, v.bos, v.eos].iter().map(|&i| i as usize).collect();
        let mut gens = HashMap::new();
        let mut add = |folder: &str, hf: &str, gguf: &str, ne: &[u64]| -> Result<()> {
            let numel = super::numel(ne)?;
            let row = usize::try_from(ne.first().copied().unwrap_or(1))
                .map_err(|_| conv("row too long".into()))?;
            let gen = Gen {
                init: init_for(gguf, ne, &special),
                numel,
                row,
                seed: mix(seed ^ fnv1a(gguf)),
            };
            if gens
                .insert((folder.to_string(), hf.to_string()), gen)
                .is_some()
            {
                return Err(conv(format!("internal: duplicate tensor {folder}/{hf}")));
            }
            Ok(())
        };
        // Checkpoint shapes: the zero units are added when the file is written.
        for t in &plan.vplan.tensors {
            add(vision::folder(t.part), &t.hf, &t.gguf, &t.src_ne)?;
        }
        for t in &plan.lplan.tensors {
            add("llm", &t.hf, &t.gguf, &t.ne)?;
        }
        Ok(SynthSource { gens, threads })
    }
}

impl TensorSource for SynthSource {
    fn read_f32(&self, folder: &str, name: &str) -> Result<Vec<f32>> {
        let g = self
            .gens
            .get(&(folder.to_string(), name.to_string()))
            .ok_or_else(|| conv(format!("internal: no synthetic tensor {folder}/{name}")))?;
        Ok(match &g.init {
            Init::Const(c) => vec![*c; g.numel],
            Init::Normal(std) => normal(g.numel, *std, g.seed, self.threads),
            Init::NormalZeroRows(std, rows) => {
                let mut v = normal(g.numel, *std, g.seed, self.threads);
                for &r in rows {
                    if let Some(row) = v.get_mut(r * g.row..(r + 1) * g.row) {
                        row.fill(0.0);
                    }
                }
                v
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_values_do_not_depend_on_threads() {
        let n = 5 * BLOCK + 123;
        let one = normal(n, 0.5, 42, 1);
        assert_eq!(one, normal(n, 0.5, 42, 3));
        assert_ne!(one, normal(n, 0.5, 43, 1));
        let mean = one.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = one.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
        assert!(one.iter().all(|x| x.is_finite() && x.abs() <= 0.5 * 5.8));
    }

    #[test]
    fn inits_by_name() {
        assert_eq!(
            init_for("blk.0.attn_norm.weight", &[64], &[]),
            Init::Const(1.0)
        );
        assert_eq!(
            init_for("v.blk.0.attn_q.bias", &[64], &[]),
            Init::Normal(SMALL)
        );
        assert_eq!(
            init_for("v.ctx.blk.0.attn_factor", &[1], &[]),
            Init::Const(1.0)
        );
        assert_eq!(
            init_for("blk.0.ffn_down.weight", &[256, 64], &[]),
            Init::Normal(1.0 / 16.0)
        );
        // Patch embedding: fan-in 3 * 14 * 14.
        assert_eq!(
            init_for("v.patch_embd.weight", &[14, 14, 3, 64], &[]),
            Init::Normal(1.0 / (588f32).sqrt())
        );
        assert_eq!(
            init_for("output.weight", &[64, 100], &[0, 1, 2]),
            Init::NormalZeroRows(0.125, vec![0, 1, 2])
        );
    }

    #[test]
    fn vocabulary_layout() {
        let (t, s, y) = synth_vocab(VOCAB_SIZE).unwrap();
        assert_eq!((t.len(), s.len(), y.len()), (32000, 32000, 32000));
        assert_eq!(&t[..3], ["<unk>", "<s>", "</s>"]);
        assert_eq!(t[3], "<0x00>");
        assert_eq!(t[13], "<0x0A>");
        assert_eq!(t[258], "<0xFF>");
        assert!(y[3..259].iter().all(|&x| x == piece_type::BYTE));
        assert!(y[259..].iter().all(|&x| x == piece_type::NORMAL));
        assert!(s[259..].windows(2).all(|w| w[1] < w[0]));
        let set: HashSet<&String> = t.iter().collect();
        assert_eq!(set.len(), t.len());
        assert!(set.contains(&"\u{2581}Describe".to_string()));
        assert!(synth_vocab(200).is_err());
        assert!(synth_vocab(40000).is_err());
    }

    #[test]
    fn plans_match_the_tables() {
        for p in Preset::ALL {
            for ty in CONVERT_TYPES {
                let plan = synth_plan(p, ty).unwrap();
                assert_eq!(plan.vision_tensors.len(), plan.vision.tensor_names().len());
                assert_eq!(plan.llm_tensors.len(), 3 + 9 * plan.llm.layers as usize);
            }
        }
        assert!(synth_plan(Preset::Tiny, GgmlType::Q4_K).is_err());
    }
}
