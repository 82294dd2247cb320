//! Validation of the LLM file before llama.cpp sees it. llama.cpp's loader
//! aborts the whole process (GGML_ASSERT) on some inconsistent files: a block
//! count of 0 or above 512, an unknown RoPE scaling type, expert counts
//! without experts, duplicate vocabulary entries, odd head sizes (at the
//! first decode). So everything llama.cpp reads for a llama model is checked
//! here first: each key it needs, with the one type it accepts; the
//! hyper-parameters against each other and against the vision file's
//! projector width; the tokenizer arrays; and the whole tensor table
//! ([`super::tensors::LLM_TENSORS`]) against the hyper-parameters.
//!
//! The file is mapped and parsed once: the checked [`LlmFile`] keeps the
//! mapping for the token embedding table that prompts read rows from.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::tensors::{expand, LlmDims};
use crate::error::{Error, Result};
use crate::gguf_file::{GgufHeader, TensorInfo, Value};
use crate::sys::{GgmlType, MappedFile};
use crate::weights::Kind;

/// llama.cpp's limit on layers (`LLAMA_MAX_LAYERS`: more aborts its loader).
const LLAMA_MAX_LAYERS: u32 = 512;

/// The token embedding table's name (its rows give the vocabulary size).
const TOKEN_EMBD: &str = "token_embd.weight";

/// Optional in llama.cpp's llama loader (Llama 3 style RoPE factors, one
/// per rotated pair); dam never writes it.
const ROPE_FREQS: &str = "rope_freqs.weight";

/// A checked LLM file.
pub struct LlmFile {
    /// The file's mapping.
    pub map: MappedFile,
    /// `token_embd.weight` (offset and type checked by the header parser).
    pub token_embd: TensorInfo,
    pub dims: LlmDims,
    pub layers: u32,
    /// Every tensor but the token embedding (which prompts read by rows):
    /// the matrices llama.cpp may repack.
    pub matrices: Vec<TensorInfo>,
}

/// Maps, parses and checks the LLM file at `path`; `width` is the vision
/// file's projector width. Messages name the file.
pub fn check_llm_file(path: &Path, width: u32) -> Result<LlmFile> {
    let map = MappedFile::open(path)?;
    let name = path.display().to_string();
    let h = GgufHeader::parse(map.bytes(), &name)?;
    let (dims, layers) = check_llm_header(&h, width).map_err(|e| match e {
        Error::InvalidModel(m) => Error::InvalidModel(format!("{name}: {m}")),
        e => e,
    })?;
    let token_embd = h
        .tensor(TOKEN_EMBD)
        .cloned()
        .ok_or_else(|| Error::InvalidModel(format!("{name}: missing tensor {TOKEN_EMBD}")))?;
    let matrices = h
        .tensors
        .iter()
        .filter(|t| t.name != TOKEN_EMBD)
        .cloned()
        .collect();
    Ok(LlmFile {
        map,
        token_embd,
        dims,
        layers,
        matrices,
    })
}

/// Checks a parsed LLM header; gives the table's sizes and the layer count.
pub fn check_llm_header(h: &GgufHeader, width: u32) -> Result<(LlmDims, u32)> {
    let k = Keys(h);
    let arch = h.req_str("general.architecture")?;
    if arch != "llama" {
        let hint = if arch == crate::weights::VISION_ARCH {
            " (is this the vision file?)"
        } else {
            ""
        };
        return bad(format!("architecture '{arch}', expected 'llama'{hint}"));
    }
    let hp = check_hparams(&k, width)?;
    let n_vocab = check_vocab(&k, hp.dims.hidden)?;
    let dims = LlmDims {
        vocab: n_vocab,
        ..hp.dims
    };
    check_tensors(h, &dims, hp.layers, hp.n_rot)?;
    Ok((dims, hp.layers))
}

fn bad<T>(m: String) -> Result<T> {
    Err(Error::InvalidModel(m))
}

fn missing(k: &str) -> Error {
    Error::InvalidModel(format!("missing key {k}"))
}

/// A short description of a value for messages (arrays by length only).
fn show(v: &Value) -> String {
    match v {
        Value::U8(x) => format!("u8 {x}"),
        Value::I8(x) => format!("i8 {x}"),
        Value::U16(x) => format!("u16 {x}"),
        Value::I16(x) => format!("i16 {x}"),
        Value::U32(x) => format!("u32 {x}"),
        Value::I32(x) => format!("i32 {x}"),
        Value::F32(x) => format!("f32 {x}"),
        Value::Bool(x) => format!("bool {x}"),
        Value::Str(x) if x.len() <= 40 => format!("string {x:?}"),
        Value::Str(x) => format!("a string of {} bytes", x.len()),
        Value::U64(x) => format!("u64 {x}"),
        Value::I64(x) => format!("i64 {x}"),
        Value::F64(x) => format!("f64 {x}"),
        Value::Array(a) => format!("an array of {}", a.len()),
    }
}

/// The header's keys, read as llama.cpp reads them: each with exactly one
/// type.
struct Keys<'a>(&'a GgufHeader);

impl Keys<'_> {
    fn u32_opt(&self, k: &str) -> Result<Option<u32>> {
        match self.0.get(k) {
            None => Ok(None),
            Some(Value::U32(v)) => Ok(Some(*v)),
            Some(v) => bad(format!("key {k} = {} must be a u32", show(v))),
        }
    }

    fn u32_req(&self, k: &str) -> Result<u32> {
        self.u32_opt(k)?.ok_or_else(|| missing(k))
    }

    fn f32_opt(&self, k: &str) -> Result<Option<f32>> {
        match self.0.get(k) {
            None => Ok(None),
            Some(Value::F32(v)) if v.is_finite() => Ok(Some(*v)),
            Some(v) => bad(format!("key {k} = {} must be a finite f32", show(v))),
        }
    }

    fn str_opt(&self, k: &str) -> Result<Option<&str>> {
        match self.0.get(k) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.as_str())),
            Some(v) => bad(format!("key {k} = {} must be a string", show(v))),
        }
    }

    /// A head size, defaulting to width / heads as in llama.cpp.
    fn head_size(&self, k: &str, n_embd: u32, n_head: u32) -> Result<u32> {
        match self.u32_opt(k)? {
            Some(v) => Ok(v),
            None if n_embd % n_head == 0 => Ok(n_embd / n_head),
            None => bad(format!(
                "{n_head} attention heads do not divide the width {n_embd} (and {k} is not set)"
            )),
        }
    }
}

/// The checked hyper-parameters (`dims.vocab` is filled in later, from the
/// embedding table).
struct Hparams {
    dims: LlmDims,
    layers: u32,
    n_rot: u32,
}

fn check_hparams(k: &Keys, width: u32) -> Result<Hparams> {
    let n_embd = k.u32_req("llama.embedding_length")?;
    let n_layer = k.u32_req("llama.block_count")?;
    let n_head = k.u32_req("llama.attention.head_count")?;
    let n_ff = k.u32_req("llama.feed_forward_length")?;
    let n_ctx = k.u32_req("llama.context_length")?;
    let eps = k
        .f32_opt("llama.attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| missing("llama.attention.layer_norm_rms_epsilon"))?;
    let n_head_kv = k
        .u32_opt("llama.attention.head_count_kv")?
        .unwrap_or(n_head);
    if n_embd == 0 || n_embd > 1 << 20 {
        return bad(format!("embedding length {n_embd}"));
    }
    if n_layer == 0 || n_layer > LLAMA_MAX_LAYERS {
        return bad(format!(
            "block count {n_layer} (1..={LLAMA_MAX_LAYERS} supported)"
        ));
    }
    if n_ff == 0 || n_ff > 1 << 24 {
        return bad(format!("feed-forward length {n_ff}"));
    }
    if n_ctx == 0 {
        return bad("context length 0".into());
    }
    if eps <= 0.0 {
        return bad(format!("RMS norm epsilon {eps} must be positive"));
    }
    if n_head == 0 || n_head > 1 << 16 {
        return bad(format!("{n_head} attention heads"));
    }
    if n_head_kv == 0 || n_head % n_head_kv != 0 {
        return bad(format!(
            "{n_head_kv} key/value heads do not divide {n_head} attention heads"
        ));
    }
    let head_k = k.head_size("llama.attention.key_length", n_embd, n_head)?;
    let head_v = k.head_size("llama.attention.value_length", n_embd, n_head)?;
    if head_k != head_v {
        return bad(format!(
            "key length {head_k} and value length {head_v} differ"
        ));
    }
    // RoPE rotates pairs: ggml asserts an even size at the first decode.
    if head_k == 0 || head_k % 2 != 0 || head_k > 1 << 16 {
        return bad(format!(
            "head size {head_k} (a positive even number expected)"
        ));
    }
    let n_rot = k.u32_opt("llama.rope.dimension_count")?.unwrap_or(head_k);
    if n_rot != head_k {
        return bad(format!(
            "RoPE dimension count {n_rot} differs from the head size {head_k}"
        ));
    }
    check_rope_and_experts(k)?;
    if n_embd != width {
        return bad(format!(
            "the vision file projects to width {width} but the LLM's width is {n_embd}: the files belong to different models"
        ));
    }
    Ok(Hparams {
        dims: LlmDims {
            vocab: 0,
            hidden: n_embd.into(),
            ff: n_ff.into(),
            heads: n_head.into(),
            kv_heads: n_head_kv.into(),
            head_dim: head_k.into(),
        },
        layers: n_layer,
        n_rot,
    })
}

/// RoPE scaling keys llama.cpp parses, and the architecture variants
/// (experts, multi-token prediction) dam does not run.
fn check_rope_and_experts(k: &Keys) -> Result<()> {
    if let Some(b) = k.f32_opt("llama.rope.freq_base")? {
        if b <= 0.0 {
            return bad(format!("RoPE frequency base {b} must be positive"));
        }
    }
    k.f32_opt("llama.rope.scaling.factor")?;
    if let Some(t) = k.str_opt("llama.rope.scaling.type")? {
        if !matches!(t, "none" | "linear" | "yarn" | "longrope") {
            return bad(format!(
                "RoPE scaling type '{t}' is not one of none, linear, yarn, longrope"
            ));
        }
    }
    for key in [
        "llama.expert_count",
        "llama.expert_used_count",
        "llama.expert_group_count",
        "llama.expert_group_used_count",
        "llama.nextn_predict_layers",
    ] {
        if let Some(v) = k.0.get(key) {
            if v.as_i64() != Some(0) {
                return bad(format!(
                    "{key} = {}: mixture-of-experts and multi-token prediction files are not supported",
                    show(v)
                ));
            }
        }
    }
    Ok(())
}

/// Checks the tokenizer keys; gives the vocabulary size (the row count of
/// the embedding table).
fn check_vocab(k: &Keys, n_embd: u64) -> Result<u64> {
    let embd =
        k.0.tensor(TOKEN_EMBD)
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {TOKEN_EMBD}")))?;
    let n_vocab = match embd.ne.as_slice() {
        [e, v] if *e == n_embd && *v <= i32::MAX as u64 => *v,
        ne => {
            return bad(format!(
                "tensor {TOKEN_EMBD} has shape {ne:?}, expected [{n_embd}, n_vocab]"
            ))
        }
    };
    if let Some(v) = k.u32_opt("llama.vocab_size")? {
        if v as u64 != n_vocab {
            return bad(format!(
                "llama.vocab_size {v} but {TOKEN_EMBD} has {n_vocab} rows"
            ));
        }
    }
    let tok_model = k
        .str_opt("tokenizer.ggml.model")?
        .ok_or_else(|| missing("tokenizer.ggml.model"))?;
    if !matches!(tok_model, "llama" | "gpt2") {
        return bad(format!(
            "tokenizer model '{tok_model}' is not supported (llama or gpt2)"
        ));
    }
    let array = |key: &str, ty: &str, ok: fn(&Value) -> bool| -> Result<Option<&[Value]>> {
        match k.0.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) if a.iter().all(ok) => {
                if a.len() as u64 != n_vocab && key != "tokenizer.ggml.merges" {
                    return bad(format!(
                        "{key} has {} entries, the vocabulary {n_vocab}",
                        a.len()
                    ));
                }
                Ok(Some(a))
            }
            Some(v) => bad(format!("{key} is not an array of {ty} ({})", show(v))),
        }
    };
    let is_str: fn(&Value) -> bool = |v| matches!(v, Value::Str(_));
    let tokens = array("tokenizer.ggml.tokens", "strings", is_str)?
        .ok_or_else(|| missing("tokenizer.ggml.tokens"))?;
    let is_score: fn(&Value) -> bool = |v| matches!(v, Value::F32(_) | Value::I32(_));
    array("tokenizer.ggml.scores", "f32 or i32", is_score)?;
    let is_i32: fn(&Value) -> bool = |v| matches!(v, Value::I32(_));
    array("tokenizer.ggml.token_type", "i32", is_i32)?;
    if tok_model == "gpt2" {
        array("tokenizer.ggml.merges", "strings", is_str)?
            .ok_or_else(|| missing("tokenizer.ggml.merges"))?;
    }
    check_tokens(tokens, tok_model == "llama")?;
    check_token_keys(k, n_vocab)?;
    Ok(n_vocab)
}

/// The vocabulary entries as llama.cpp reads them: C strings (cut at the
/// first NUL), empty ones renamed, all distinct (it asserts that); and for
/// SentencePiece (`spm`) every byte token, which tokenization falls back to
/// for text outside the vocabulary (llama.cpp throws through its C API, an
/// abort, when one is missing).
fn check_tokens(tokens: &[Value], spm: bool) -> Result<()> {
    let mut ids = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let s = t.as_str().unwrap_or_default();
        let c = s.split('\0').next().unwrap_or_default();
        let key: std::borrow::Cow<str> = if c.is_empty() {
            format!("[EMPTY_{i}]").into()
        } else {
            c.into()
        };
        if let Some(first) = ids.insert(key, i) {
            return bad(format!(
                "tokenizer.ggml.tokens has a duplicate entry {s:?} (ids {first} and {i}, as llama.cpp reads them)"
            ));
        }
    }
    if spm {
        for b in 0..=255u8 {
            let hex = format!("<0x{b:02X}>");
            let plain = (1..0x80).contains(&b).then(|| (b as char).to_string());
            if !ids.contains_key(hex.as_str())
                && !plain.is_some_and(|p| ids.contains_key(p.as_str()))
            {
                return bad(format!(
                    "the SentencePiece vocabulary lacks the byte token {hex}, which llama.cpp needs to tokenize arbitrary text"
                ));
            }
        }
    }
    Ok(())
}

/// Special token ids within the vocabulary; the tokenizer flags as bools.
fn check_token_keys(k: &Keys, n_vocab: u64) -> Result<()> {
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ] {
        if let Some(id) = k.u32_opt(key)? {
            if id as u64 >= n_vocab {
                return bad(format!("{key} {id} is outside the vocabulary ({n_vocab})"));
            }
        }
    }
    for key in [
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.ggml.remove_extra_whitespaces",
    ] {
        if let Some(v) = k.0.get(key) {
            if v.as_bool().is_none() {
                return bad(format!("key {key} = {} must be a bool", show(v)));
            }
        }
    }
    Ok(())
}

/// The whole tensor table, with shapes from the hyper-parameters: every
/// required tensor present, each with its shape, norms f32, nothing else.
fn check_tensors(h: &GgufHeader, dims: &LlmDims, layers: u32, n_rot: u32) -> Result<()> {
    struct Want {
        name: String,
        ne: Vec<u64>,
        f32: bool,
        required: bool,
    }
    let mut expected: Vec<Want> = expand(layers as usize)
        .into_iter()
        .map(|n| Want {
            ne: n.def.ne(dims),
            f32: n.def.kind == Kind::F32,
            required: !n.def.optional,
            name: n.gguf,
        })
        .collect();
    expected.push(Want {
        name: ROPE_FREQS.into(),
        ne: vec![n_rot as u64 / 2],
        f32: true,
        required: false,
    });
    let by_name: HashMap<&str, &TensorInfo> =
        h.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    for w in &expected {
        let Some(t) = by_name.get(w.name.as_str()) else {
            if w.required {
                return bad(format!("missing tensor {}", w.name));
            }
            continue;
        };
        if t.ne != w.ne {
            return bad(format!(
                "tensor {} has shape {:?}, expected {:?}",
                w.name, t.ne, w.ne
            ));
        }
        if w.f32 && t.ty != GgmlType::F32 {
            return bad(format!(
                "tensor {} has type {}, expected f32",
                w.name,
                t.ty.name()
            ));
        }
    }
    let known: HashSet<&str> = expected.iter().map(|w| w.name.as_str()).collect();
    let extra: Vec<&str> = h
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !known.contains(n))
        .take(5)
        .collect();
    if !extra.is_empty() {
        return bad(format!("unexpected tensor {}", extra.join(", ")));
    }
    Ok(())
}
