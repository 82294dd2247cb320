//! The LLM file's tensor table: llama.cpp's llama names, the Hugging Face
//! names they come from, their shapes in terms of the hyper-parameters and
//! how they are stored. The converter and `dam synth` write it, the loader's
//! checker ([`super::check`]) validates files against it and the format doc
//! (`gguf/README.md`, rendered by `convert::doc`) is generated from it, as
//! `weights::VISION_TENSORS` is for the vision file.

use crate::weights::{layer_name, Kind};

/// A size in an LLM tensor shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LDim {
    /// vocab_size.
    Vocab,
    /// hidden_size.
    Hidden,
    /// intermediate_size.
    Ff,
    /// num_attention_heads * head_dim.
    QRows,
    /// num_key_value_heads * head_dim.
    KvRows,
}

impl LDim {
    /// The symbol used in `gguf/README.md`.
    pub fn symbol(self) -> &'static str {
        match self {
            LDim::Vocab => "V",
            LDim::Hidden => "H",
            LDim::Ff => "F",
            LDim::QRows => "Hq",
            LDim::KvRows => "Hkv",
        }
    }
}

/// Which head count the llama.cpp Q/K row permutation uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permute {
    Heads,
    KvHeads,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct LlmTensor {
    /// llama.cpp's name; `{i}` is the layer index.
    pub gguf: &'static str,
    /// The checkpoint's name under `llm/`.
    pub hf: &'static str,
    /// PyTorch order (rows first); the GGUF `ne` is the reverse.
    pub shape: &'static [LDim],
    /// Matrices take the requested type; norms stay f32.
    pub kind: Kind,
    /// The converter permutes the rows as llama.cpp's converter does.
    pub permute: Option<Permute>,
    /// May be absent: llama.cpp then uses `token_embd.weight` (tied
    /// embeddings).
    pub optional: bool,
}

impl LlmTensor {
    /// Whether the row stands for one tensor per layer.
    pub fn per_layer(&self) -> bool {
        self.gguf.contains("{i}")
    }

    /// The GGUF shape (`ne`, row length first).
    pub fn ne(&self, dims: &LlmDims) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| dims.dim(d)).collect()
    }
}

use Kind::{Matrix, F32};
use LDim::*;

const fn t(
    gguf: &'static str,
    hf: &'static str,
    shape: &'static [LDim],
    kind: Kind,
    permute: Option<Permute>,
) -> LlmTensor {
    LlmTensor {
        gguf,
        hf,
        shape,
        kind,
        permute,
        optional: false,
    }
}

/// Every tensor of the LLM file, in file order for the global rows; the
/// `{i}` rows repeat per layer after them.
pub const LLM_TENSORS: &[LlmTensor] = &[
    t(
        "token_embd.weight",
        "model.embed_tokens.weight",
        &[Vocab, Hidden],
        Matrix,
        None,
    ),
    t(
        "output_norm.weight",
        "model.norm.weight",
        &[Hidden],
        F32,
        None,
    ),
    LlmTensor {
        optional: true,
        ..t(
            "output.weight",
            "lm_head.weight",
            &[Vocab, Hidden],
            Matrix,
            None,
        )
    },
    t(
        "blk.{i}.attn_norm.weight",
        "model.layers.{i}.input_layernorm.weight",
        &[Hidden],
        F32,
        None,
    ),
    t(
        "blk.{i}.attn_q.weight",
        "model.layers.{i}.self_attn.q_proj.weight",
        &[QRows, Hidden],
        Matrix,
        Some(Permute::Heads),
    ),
    t(
        "blk.{i}.attn_k.weight",
        "model.layers.{i}.self_attn.k_proj.weight",
        &[KvRows, Hidden],
        Matrix,
        Some(Permute::KvHeads),
    ),
    t(
        "blk.{i}.attn_v.weight",
        "model.layers.{i}.self_attn.v_proj.weight",
        &[KvRows, Hidden],
        Matrix,
        None,
    ),
    t(
        "blk.{i}.attn_output.weight",
        "model.layers.{i}.self_attn.o_proj.weight",
        &[Hidden, QRows],
        Matrix,
        None,
    ),
    t(
        "blk.{i}.ffn_norm.weight",
        "model.layers.{i}.post_attention_layernorm.weight",
        &[Hidden],
        F32,
        None,
    ),
    t(
        "blk.{i}.ffn_gate.weight",
        "model.layers.{i}.mlp.gate_proj.weight",
        &[Ff, Hidden],
        Matrix,
        None,
    ),
    t(
        "blk.{i}.ffn_up.weight",
        "model.layers.{i}.mlp.up_proj.weight",
        &[Ff, Hidden],
        Matrix,
        None,
    ),
    t(
        "blk.{i}.ffn_down.weight",
        "model.layers.{i}.mlp.down_proj.weight",
        &[Hidden, Ff],
        Matrix,
        None,
    ),
];

/// The sizes the table's shapes are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LlmDims {
    pub vocab: u64,
    pub hidden: u64,
    pub ff: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
}

impl LlmDims {
    pub fn dim(&self, d: LDim) -> u64 {
        match d {
            LDim::Vocab => self.vocab,
            LDim::Hidden => self.hidden,
            LDim::Ff => self.ff,
            LDim::QRows => self.heads * self.head_dim,
            LDim::KvRows => self.kv_heads * self.head_dim,
        }
    }

    /// The head count of a row permutation.
    pub fn permute_heads(&self, p: Permute) -> u64 {
        match p {
            Permute::Heads => self.heads,
            Permute::KvHeads => self.kv_heads,
        }
    }
}

/// One tensor of a file: its GGUF and checkpoint names and its table row.
pub struct Named {
    pub gguf: String,
    pub hf: String,
    pub def: &'static LlmTensor,
}

/// Every tensor of a file with `layers` layers, in file order: the global
/// rows, then layer by layer.
pub fn expand(layers: usize) -> Vec<Named> {
    let named = |def: &'static LlmTensor, i: usize| Named {
        gguf: layer_name(def.gguf, i),
        hf: layer_name(def.hf, i),
        def,
    };
    let global = LLM_TENSORS.iter().filter(|d| !d.per_layer());
    let mut out: Vec<Named> = global.map(|d| named(d, 0)).collect();
    for i in 0..layers {
        out.extend(
            LLM_TENSORS
                .iter()
                .filter(|d| d.per_layer())
                .map(|d| named(d, i)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_lists_globals_then_layers() {
        let names: Vec<String> = expand(2).into_iter().map(|n| n.gguf).collect();
        assert_eq!(names.len(), 3 + 2 * 9);
        assert_eq!(names[2], "output.weight");
        assert_eq!(names[3], "blk.0.attn_norm.weight");
        assert_eq!(names[12], "blk.1.attn_norm.weight");
    }
}
