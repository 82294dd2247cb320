//! The LLM file: a standard llama-architecture GGUF (what llama.cpp's
//! convert_hf_to_gguf.py writes for a Hugging Face Llama), with the
//! SentencePiece vocabulary, from `llm/`.

use std::collections::HashSet;
use std::path::Path;

use super::hf::{self, Cfg};
use super::spm::{self, piece_type};
use super::{matrix_type, Checkpoint, Fallback, FileOut, Progress, TensorSource};
use crate::error::{Error, Result};
use crate::llm::tensors::{expand, LlmDims, LlmTensor, Named};
use crate::sys::gguf::GgufWriter;
use crate::sys::GgmlType;
use crate::weights::Kind;

fn conv(m: String) -> Error {
    Error::Convert(m)
}

/// llama.cpp's `general.file_type` (llama_ftype) for the types `convert` writes.
pub fn file_type(ty: GgmlType) -> u32 {
    crate::sys::quantize::llama_ftype(ty)
}

/// The Llama hyper-parameters, from `llm/config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmHparams {
    pub vocab: u32,
    pub hidden: u32,
    pub layers: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub ff: u32,
    pub context: u32,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub tie_embeddings: bool,
}

impl LlmHparams {
    /// The sizes of the tensor table's shapes.
    pub fn dims(&self) -> LlmDims {
        LlmDims {
            vocab: self.vocab.into(),
            hidden: self.hidden.into(),
            ff: self.ff.into(),
            heads: self.heads.into(),
            kv_heads: self.kv_heads.into(),
            head_dim: self.head_dim.into(),
        }
    }

    fn from_cfg(c: &Cfg) -> Result<LlmHparams> {
        let bad = |m: String| Err(conv(format!("{}: {m}", c.what)));
        if let Ok(t) = c.str("model_type") {
            if t != "llama" {
                return bad(format!(
                    "model_type \"{t}\" is not supported (llama expected)"
                ));
            }
        }
        if c.has("rope_scaling") {
            return bad("rope_scaling is set; RoPE scaling is not supported".into());
        }
        if c.bool_or("attention_bias", false)? {
            return bad("attention_bias is true; attention biases are not supported".into());
        }
        if c.bool_or("mlp_bias", false)? {
            return bad("mlp_bias is true; MLP biases are not supported".into());
        }
        let act = c.str_or("hidden_act", "silu")?;
        if act != "silu" {
            return bad(format!(
                "hidden_act \"{act}\" is not supported (silu expected)"
            ));
        }
        let hidden = c.u32("hidden_size")?;
        let heads = c.u32("num_attention_heads")?;
        // LlamaConfig defaults (transformers omits default values).
        let kv_heads = c.u32_or("num_key_value_heads", heads)?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return bad(format!(
                "{heads} attention heads and {kv_heads} key/value heads"
            ));
        }
        let head_dim = if c.has("head_dim") {
            c.u32("head_dim")?
        } else if hidden % heads == 0 {
            hidden / heads
        } else {
            return bad(format!("{heads} heads do not divide hidden_size {hidden}"));
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return bad(format!("head_dim {head_dim} must be even"));
        }
        let hp = LlmHparams {
            vocab: c.u32("vocab_size")?,
            hidden,
            layers: c.u32("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            ff: c.u32("intermediate_size")?,
            context: c.u32_or("max_position_embeddings", 2048)?,
            rope_theta: c.f32_or("rope_theta", 10000.0)?,
            rms_eps: c.f32_or("rms_norm_eps", 1e-6)?,
            tie_embeddings: c.bool_or("tie_word_embeddings", false)?,
        };
        for (n, v) in [
            ("vocab_size", hp.vocab),
            ("hidden_size", hidden),
            ("intermediate_size", hp.ff),
        ] {
            if v == 0 || v > 1 << 24 {
                return bad(format!("{n} {v}"));
            }
        }
        if hp.layers == 0 || hp.layers > 4096 {
            return bad(format!("num_hidden_layers {}", hp.layers));
        }
        if hp.rms_eps <= 0.0 || hp.rope_theta <= 0.0 {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        if u64::from(heads) * u64::from(head_dim) > 1 << 24 {
            return bad("attention width too large".into());
        }
        Ok(hp)
    }
}

/// The vocabulary as written to the file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub remove_extra_whitespaces: bool,
}

/// Reads `llm/tokenizer.model` (+ tokenizer_config.json, generation_config.json)
/// and pads the vocabulary to `n_vocab` like convert_hf_to_gguf.py
/// (`[PAD{id}]`, type UNUSED, score -10000).
pub(crate) fn read_vocab(dir: &Path, cfg: &Cfg, n_vocab: u32) -> Result<Vocab> {
    let path = dir.join("tokenizer.model");
    let bytes =
        std::fs::read(&path).map_err(|e| conv(format!("cannot read {}: {e}", path.display())))?;
    let sp = spm::parse(&bytes)?;
    if sp.model_type != 1 && sp.model_type != 2 {
        return Err(conv(format!(
            "llm/tokenizer.model: model type {} is not supported (BPE or unigram)",
            sp.model_type
        )));
    }
    let n = n_vocab as usize;
    if sp.pieces.len() > n {
        return Err(conv(format!(
            "llm/tokenizer.model has {} pieces, more than vocab_size {n} of llm/config.json",
            sp.pieces.len()
        )));
    }
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; n];
    let mut types = vec![piece_type::UNUSED; n];
    for (i, p) in sp.pieces.iter().enumerate() {
        if let (Some(t), Some(s), Some(y)) =
            (tokens.get_mut(i), scores.get_mut(i), types.get_mut(i))
        {
            *t = p.piece.clone();
            *s = p.score;
            *y = p.ty;
        }
    }
    let tok_cfg = hf::read_json_opt(&dir.join("tokenizer_config.json"))?;
    let tok_cfg = Cfg::new("llm/tokenizer_config.json", tok_cfg.into_iter().collect());
    // Added tokens (tokenizer_config.json's added_tokens_decoder) fill the
    // padding slots; a slot that the SentencePiece model already defines
    // with the same text keeps its SentencePiece type.
    if let Some(added) = tok_cfg
        .get("added_tokens_decoder")
        .and_then(|a| a.as_object())
    {
        for (id, data) in added {
            let Some(i) = id.parse::<usize>().ok().filter(|&i| i < n) else {
                continue;
            };
            let Some(content) = data.get("content").and_then(|c| c.as_str()) else {
                continue;
            };
            if i < sp.pieces.len() && tokens.get(i).is_some_and(|t| t == content) {
                continue;
            }
            if content.is_empty() || content.contains('\0') {
                return Err(conv(format!(
                    "llm/tokenizer_config.json: added token {id} has bad content"
                )));
            }
            let special = data
                .get("special")
                .and_then(|s| s.as_bool())
                .unwrap_or(false);
            let (text, ty) = if special {
                (content.to_string(), piece_type::CONTROL)
            } else {
                (content.replace('\u{2581}', " "), piece_type::USER_DEFINED)
            };
            if let (Some(t), Some(s), Some(y)) =
                (tokens.get_mut(i), scores.get_mut(i), types.get_mut(i))
            {
                *t = text;
                *s = -1000.0;
                *y = ty;
            }
        }
    }
    let gen = hf::read_json_opt(&dir.join("generation_config.json"))?;
    let gen = Cfg::new("llm/generation_config.json", gen.into_iter().collect());
    let first_id = |c: &Cfg, key: &str| -> Result<Option<u32>> {
        match c.get(key) {
            Some(serde_json::Value::Array(a)) => Ok(a
                .first()
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())),
            Some(_) => c.opt_id(key),
            None => Ok(None),
        }
    };
    let spm_id = |v: i32| u32::try_from(v).ok();
    let bos = first_id(&gen, "bos_token_id")?
        .or(first_id(cfg, "bos_token_id")?)
        .or(spm_id(sp.bos_id));
    let eos = first_id(&gen, "eos_token_id")?
        .or(first_id(cfg, "eos_token_id")?)
        .or(spm_id(sp.eos_id));
    let unk = spm_id(sp.unk_id);
    let pad = cfg
        .opt_id("pad_token_id")?
        .or(gen.opt_id("pad_token_id")?)
        .or(spm_id(sp.pad_id));
    let check = |what: &str, id: Option<u32>| -> Result<u32> {
        let id = id.ok_or_else(|| conv(format!("llm: no {what} token id")))?;
        if id as usize >= n {
            return Err(conv(format!(
                "llm: {what} token id {id} is outside the vocabulary of {n}"
            )));
        }
        Ok(id)
    };
    let bos = check("BOS", bos)?;
    let eos = check("EOS", eos)?;
    let unk = check("unknown", unk)?;
    let pad = match pad {
        Some(p) => Some(check("padding", Some(p))?),
        None => None,
    };
    Ok(Vocab {
        tokens,
        scores,
        types,
        bos,
        eos,
        unk,
        pad,
        add_bos: tok_cfg.bool_or("add_bos_token", true)?,
        add_eos: tok_cfg.bool_or("add_eos_token", false)?,
        add_space_prefix: sp.add_dummy_prefix,
        remove_extra_whitespaces: sp.remove_extra_whitespaces,
    })
}

pub(crate) struct Planned {
    pub gguf: String,
    pub hf: String,
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Q/K row permutation: the head count.
    pub permute: Option<u32>,
}

pub(crate) struct LlmPlan {
    pub hp: LlmHparams,
    pub ty: GgmlType,
    pub vocab: Vocab,
    pub tensors: Vec<Planned>,
    pub ignored: Vec<String>,
    pub fallbacks: Vec<Fallback>,
}

/// The stored form of one table tensor (no row permutation), as the
/// converter and `dam synth` write it.
pub(crate) fn planned(
    gguf: String,
    hf: String,
    def: &LlmTensor,
    dims: &LlmDims,
    ty: GgmlType,
    fallbacks: &mut Vec<Fallback>,
) -> Planned {
    let ne = def.ne(dims);
    let row = ne.first().copied().unwrap_or(1);
    let ty = match def.kind {
        // llama.cpp's fallback table, so dam's and llama.cpp's quantizations agree.
        Kind::Matrix => matrix_type(ty, row, GgmlType::fallback_for_row, &gguf, fallbacks),
        Kind::F32 => GgmlType::F32,
    };
    Planned {
        gguf,
        hf,
        ne,
        ty,
        permute: None,
    }
}

/// Checks the config, the tokenizer and every tensor.
pub(crate) fn plan(ck: &Checkpoint, ty: GgmlType) -> Result<LlmPlan> {
    let cfg = ck.sub_cfg("llm")?;
    let hp = LlmHparams::from_cfg(&cfg)?;
    let vocab = read_vocab(&ck.root.join("llm"), &cfg, hp.vocab)?;
    let shards = ck.shards("llm")?;
    let ts = shards.tensors()?;
    let mut tensors = Vec::new();
    let mut fallbacks = Vec::new();
    let mut used = HashSet::new();
    let dims = hp.dims();
    for Named {
        gguf,
        hf: name,
        def,
    } in expand(hp.layers as usize)
    {
        if !ts.contains(&name) && def.optional && hp.tie_embeddings {
            // Tied head: llama.cpp uses token_embd when output.weight is absent.
            continue;
        }
        let meta = ts.meta(&name)?;
        hf::check_dtype("llm", &name, &meta)?;
        let ne = def.ne(&dims);
        let want: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        if meta.shape != want {
            return Err(conv(format!(
                "llm/: tensor {name} has shape {:?}, expected {want:?} from llm/config.json",
                meta.shape
            )));
        }
        let mut p = planned(gguf, name.clone(), def, &dims, ty, &mut fallbacks);
        p.permute = def.permute.map(|h| dims.permute_heads(h) as u32);
        used.insert(name);
        tensors.push(p);
    }
    let mut ignored: Vec<String> = ts
        .names()
        .filter(|n| !used.contains(*n))
        .map(|n| format!("llm/{n}"))
        .collect();
    ignored.sort();
    Ok(LlmPlan {
        hp,
        ty,
        vocab,
        tensors,
        ignored,
        fallbacks,
    })
}

/// llama.cpp's row permutation of HF Llama Q/K weights (convert_hf_to_gguf's
/// `permute`): `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)`.
pub fn permute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Result<Vec<f32>> {
    let per_head = rows / n_head.max(1);
    if n_head == 0
        || rows % n_head != 0
        || per_head % 2 != 0
        || rows.checked_mul(cols) != Some(w.len())
    {
        return Err(conv(format!(
            "cannot permute {rows}x{cols} rows for {n_head} heads"
        )));
    }
    let half = per_head / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..n_head {
        for j in 0..half {
            for s in 0..2 {
                let src = h * per_head + s * half + j;
                let row = w
                    .get(src * cols..(src + 1) * cols)
                    .ok_or_else(|| conv("permute: row".into()))?;
                out.extend_from_slice(row);
            }
        }
    }
    Ok(out)
}

/// The inverse of [`permute_rows`] (for tests and tools).
pub fn unpermute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Result<Vec<f32>> {
    let per_head = rows / n_head.max(1);
    if n_head == 0
        || rows % n_head != 0
        || per_head % 2 != 0
        || rows.checked_mul(cols) != Some(w.len())
    {
        return Err(conv(format!(
            "cannot permute {rows}x{cols} rows for {n_head} heads"
        )));
    }
    let half = per_head / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for j in 0..half {
            for s in 0..2 {
                let dst = h * per_head + s * half + j;
                let src = h * per_head + j * 2 + s;
                let from = w
                    .get(src * cols..(src + 1) * cols)
                    .ok_or_else(|| conv("permute: row".into()))?;
                let to = out
                    .get_mut(dst * cols..(dst + 1) * cols)
                    .ok_or_else(|| conv("permute: row".into()))?;
                to.copy_from_slice(from);
            }
        }
    }
    Ok(out)
}

/// Key names of the LLM file.
pub mod llm_key {
    pub const ARCH: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const FILE_TYPE: &str = "general.file_type";
    pub const QUANT_VERSION: &str = "general.quantization_version";
    pub const VOCAB_SIZE: &str = "llama.vocab_size";
    pub const CONTEXT: &str = "llama.context_length";
    pub const EMBD: &str = "llama.embedding_length";
    pub const BLOCKS: &str = "llama.block_count";
    pub const FF: &str = "llama.feed_forward_length";
    pub const ROPE_DIM: &str = "llama.rope.dimension_count";
    pub const HEADS: &str = "llama.attention.head_count";
    pub const KV_HEADS: &str = "llama.attention.head_count_kv";
    pub const KEY_LEN: &str = "llama.attention.key_length";
    pub const VALUE_LEN: &str = "llama.attention.value_length";
    pub const ROPE_BASE: &str = "llama.rope.freq_base";
    pub const RMS_EPS: &str = "llama.attention.layer_norm_rms_epsilon";
    pub const TOK_MODEL: &str = "tokenizer.ggml.model";
    pub const TOK_PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    pub const SCORES: &str = "tokenizer.ggml.scores";
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const BOS: &str = "tokenizer.ggml.bos_token_id";
    pub const EOS: &str = "tokenizer.ggml.eos_token_id";
    pub const UNK: &str = "tokenizer.ggml.unknown_token_id";
    pub const PAD: &str = "tokenizer.ggml.padding_token_id";
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const ADD_SPACE: &str = "tokenizer.ggml.add_space_prefix";
    pub const REMOVE_WS: &str = "tokenizer.ggml.remove_extra_whitespaces";
}

/// ggml's quantization version (GGML_QNT_VERSION).
const QUANT_VERSION: u32 = 2;

/// The LLM file's header: every key and the tensor table.
pub(crate) fn header(plan: &LlmPlan, name: &str) -> Result<GgufWriter> {
    use llm_key as k;
    let hp = &plan.hp;
    let v = &plan.vocab;
    let mut w = GgufWriter::with_capacity(plan.tensors.len())?;
    w.set_str(k::ARCH, "llama")?;
    w.set_str(k::NAME, name)?;
    w.set_u32(k::FILE_TYPE, file_type(plan.ty))?;
    w.set_u32(k::QUANT_VERSION, QUANT_VERSION)?;
    w.set_u32(k::VOCAB_SIZE, hp.vocab)?;
    w.set_u32(k::CONTEXT, hp.context)?;
    w.set_u32(k::EMBD, hp.hidden)?;
    w.set_u32(k::BLOCKS, hp.layers)?;
    w.set_u32(k::FF, hp.ff)?;
    w.set_u32(k::ROPE_DIM, hp.head_dim)?;
    w.set_u32(k::HEADS, hp.heads)?;
    w.set_u32(k::KV_HEADS, hp.kv_heads)?;
    w.set_u32(k::KEY_LEN, hp.head_dim)?;
    w.set_u32(k::VALUE_LEN, hp.head_dim)?;
    w.set_f32(k::ROPE_BASE, hp.rope_theta)?;
    w.set_f32(k::RMS_EPS, hp.rms_eps)?;
    w.set_str(k::TOK_MODEL, "llama")?;
    w.set_str(k::TOK_PRE, "default")?;
    w.set_arr_str(k::TOKENS, &v.tokens)?;
    w.set_arr_f32(k::SCORES, &v.scores)?;
    w.set_arr_i32(k::TOKEN_TYPE, &v.types)?;
    w.set_u32(k::BOS, v.bos)?;
    w.set_u32(k::EOS, v.eos)?;
    w.set_u32(k::UNK, v.unk)?;
    if let Some(p) = v.pad {
        w.set_u32(k::PAD, p)?;
    }
    w.set_bool(k::ADD_BOS, v.add_bos)?;
    w.set_bool(k::ADD_EOS, v.add_eos)?;
    w.set_bool(k::ADD_SPACE, v.add_space_prefix)?;
    w.set_bool(k::REMOVE_WS, v.remove_extra_whitespaces)?;
    for t in &plan.tensors {
        w.add_tensor(&t.gguf, t.ty, &t.ne)?;
    }
    Ok(w)
}

/// Writes the LLM file to `path`, reading each tensor from `src` (folder
/// `llm`, the plan's checkpoint names).
pub(crate) fn write(
    src: &dyn TensorSource,
    plan: &LlmPlan,
    name: &str,
    path: &Path,
    progress: bool,
) -> Result<FileOut> {
    let mut out = header(plan, name)?.begin(path)?;
    let threads = super::default_threads();
    let mut prog = Progress::new(progress, plan.tensors.len(), "llm");
    for t in &plan.tensors {
        prog.step(&t.gguf);
        let row = usize::try_from(t.ne.first().copied().unwrap_or(1))
            .map_err(|_| conv("row too long".into()))?;
        let mut data = src.read_f32("llm", &t.hf)?;
        if let Some(heads) = t.permute {
            let rows = data.len() / row.max(1);
            data = permute_rows(&data, rows, row, heads as usize)?;
        }
        let bytes = super::quantize_rows(t.ty, &data, row, threads)?;
        drop(data);
        out.write_tensor(&t.gguf, &bytes)?;
    }
    prog.finish();
    let bytes = out.finish()?;
    Ok(FileOut {
        tensors: plan.tensors.len(),
        bytes,
        fallbacks: plan.fallbacks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_numpy_and_inverts() {
        // 2 heads of 4 rows, 1 column: rows [h, s, j] -> [h, j, s].
        let w: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let p = permute_rows(&w, 8, 1, 2).unwrap();
        assert_eq!(p, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(unpermute_rows(&p, 8, 1, 2).unwrap(), w);
        assert!(permute_rows(&w, 8, 1, 3).is_err());
    }
}
