// The baseline of benches/compare.sh: the canonical llama.cpp prefill and
// greedy decode loop, written against llama.h only (no dam code), linked
// against the same static llama.cpp/ggml libraries that llama-cpp-sys-2
// built for dam. It runs DAM's prompt with the image slot filled by n_img
// embedding rows, exactly as dam splices them: the text before `<image>`
// tokenized with BOS, the rows, the text after it tokenized without BOS.
//
// usage: baseline MODEL.gguf THREADS N_GEN N_IMG "PROMPT WITH <image>"
// prints one JSON object: load/ready time, prefill and decode timings.
//
// Context: n_ctx 4096, n_batch 2048, everything else llama.cpp's defaults
// (f16 KV cache, flash attention auto, n_ubatch 512, mmap).

#include <math.h>
#include <string.h>
#define BENCH_NAME "baseline"
#include "llama_bench.h"

// Decodes tokens at positions pos.. (logits for the last one if `last`).
static void decode_tokens(struct llama_context *ctx, const llama_token *t, int n, int pos, int last) {
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = t[i];
        b.pos[i] = pos + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = last && i == n - 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) die("llama_decode (tokens) failed");
    llama_batch_free(b);
}

// Decodes n embedding rows of width n_embd at positions pos..
static void decode_embd(struct llama_context *ctx, const float *rows, int n, int n_embd, int pos, int last) {
    struct llama_batch b = llama_batch_init(n, n_embd, 1);
    memcpy(b.embd, rows, sizeof(float) * (size_t)n * n_embd);
    for (int i = 0; i < n; i++) {
        b.pos[i] = pos + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = last && i == n - 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) die("llama_decode (embeddings) failed");
    llama_batch_free(b);
}

static int tokenize(const struct llama_vocab *v, const char *s, int len, int bos, llama_token *out, int max) {
    int n = llama_tokenize(v, s, len, out, max, bos, false);
    if (n < 0) die("prompt too long");
    return n;
}

int main(int argc, char **argv) {
    if (argc != 6) die("usage: baseline MODEL THREADS N_GEN N_IMG PROMPT");
    const char *path = argv[1];
    int threads = atoi(argv[2]), n_gen = atoi(argv[3]), n_img = atoi(argv[4]);
    const char *prompt = argv[5];
    const char *slot = strstr(prompt, "<image>");
    if (!slot || threads < 1 || n_gen < 1 || n_img < 1) die("bad arguments");

    llama_log_set(quiet, NULL);
    double t0 = now_ms();
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) die("cannot load the model");
    double t_load = now_ms();
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 4096;
    cp.n_batch = 2048;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create a context");
    double t_ready = now_ms();

    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_embd = llama_model_n_embd(model);
    llama_token pre[4096], post[4096];
    int n_pre = tokenize(vocab, prompt, (int)(slot - prompt), 1, pre, 4096);
    const char *rest = slot + strlen("<image>");
    int n_post = tokenize(vocab, rest, (int)strlen(rest), 0, post, 4096);
    // Image rows: a fixed pattern of about the scale of projector outputs.
    float *rows = malloc(sizeof(float) * (size_t)n_img * n_embd);
    if (!rows) die("out of memory");
    for (size_t i = 0; i < (size_t)n_img * n_embd; i++) rows[i] = 0.6f * sinf(0.37f * (float)i);

    struct llama_sampler *smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
    llama_sampler_chain_add(smpl, llama_sampler_init_greedy());

    double t1 = now_ms();
    int pos = 0;
    if (n_pre > 0) decode_tokens(ctx, pre, n_pre, pos, 0);
    pos += n_pre;
    decode_embd(ctx, rows, n_img, n_embd, pos, n_post == 0);
    pos += n_img;
    if (n_post > 0) decode_tokens(ctx, post, n_post, pos, 1);
    pos += n_post;
    double t2 = now_ms();
    int n_prompt = pos;

    // The canonical loop: sample, feed the token back.
    char first[64] = "";
    for (int i = 0; i < n_gen; i++) {
        llama_token tok = llama_sampler_sample(smpl, ctx, -1);
        if (i == 0) {
            int k = llama_token_to_piece(vocab, tok, first, sizeof first - 1, 0, false);
            first[k > 0 ? k : 0] = 0;
            for (char *c = first; *c; c++)
                if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '?';
        }
        decode_tokens(ctx, &tok, 1, pos++, 1);
    }
    double t3 = now_ms();

    printf("{\"load_ms\":%.3f,\"ready_ms\":%.3f,\"threads\":%d,\"prompt_tokens\":%d,"
           "\"text_tokens\":%d,\"prefill_ms\":%.3f,\"prefill_tokens_per_s\":%.3f,"
           "\"decode_steps\":%d,\"decode_ms\":%.3f,\"decode_tokens_per_s\":%.3f,"
           "\"first_piece\":\"%s\"}\n",
           t_load - t0, t_ready - t0, threads, n_prompt, n_pre + n_post, t2 - t1,
           n_prompt * 1e3 / (t2 - t1), n_gen, t3 - t2, n_gen * 1e3 / (t3 - t2), first);
    free(rows);
    llama_sampler_free(smpl);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
