// Decode throughput of B parallel sequences in llama.cpp alone, for
// benches/compare.sh: what a batch of captions (`describe_many`, `dam serve`
// with several clients) can gain over one, on this machine, with no dam code.
// Each of the B sequences is prefilled with N_CTX positions, then every step
// decodes one token of each sequence in one llama_decode (a batch of B rows),
// as dam's parallel decoding does.
//
// usage: batch_decode MODEL.gguf THREADS B STEPS N_CTX
// prints one JSON object: {"batch":B,"decode_ms":..,"tok_s":..,"steps_s":..}
//
// Context: n_ctx 4096, n_batch 2048, n_seq_max B, everything else llama.cpp's
// defaults (f16 KV cache, flash attention auto, mmap), as benches/baseline.c.

#define BENCH_NAME "batch_decode"
#include "llama_bench.h"

// One row per sequence s < n_seq: token `tok + s`, position `pos`, logits on.
static void fill_step(struct llama_batch *b, int n_seq, int tok, int pos) {
    b->n_tokens = n_seq;
    for (int s = 0; s < n_seq; s++) {
        b->token[s] = tok + s;
        b->pos[s] = pos;
        b->n_seq_id[s] = 1;
        b->seq_id[s][0] = s;
        b->logits[s] = 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 6) die("usage: batch_decode MODEL.gguf THREADS B STEPS N_CTX");
    const char *path = argv[1];
    int threads = atoi(argv[2]), n_seq = atoi(argv[3]), steps = atoi(argv[4]), n_ctx = atoi(argv[5]);
    if (threads < 1 || n_seq < 1 || n_seq > 64 || steps < 1 || n_ctx < 1 || n_seq * (n_ctx + steps) > 4096)
        die("need THREADS >= 1, 1 <= B <= 64, STEPS >= 1, N_CTX >= 1, B * (N_CTX + STEPS) <= 4096");

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) die("cannot load the model");
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 4096;
    cp.n_batch = 2048;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.n_seq_max = (uint32_t)n_seq;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot make the context");
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (n_vocab < 300 + n_seq) die("vocabulary too small");

    // Prefill: N_CTX tokens per sequence, all sequences in one batch.
    struct llama_batch pre = llama_batch_init(n_seq * n_ctx, 0, 1);
    pre.n_tokens = 0;
    for (int s = 0; s < n_seq; s++) {
        for (int i = 0; i < n_ctx; i++) {
            int k = pre.n_tokens++;
            pre.token[k] = 100 + (i % 100);
            pre.pos[k] = i;
            pre.n_seq_id[k] = 1;
            pre.seq_id[k][0] = s;
            pre.logits[k] = i == n_ctx - 1;
        }
    }
    double t0 = now_ms();
    if (llama_decode(ctx, pre) != 0) die("llama_decode (prefill) failed");
    double prefill_ms = now_ms() - t0;
    llama_batch_free(pre);

    struct llama_batch step = llama_batch_init(n_seq, 0, 1);
    double t1 = now_ms();
    for (int i = 0; i < steps; i++) {
        fill_step(&step, n_seq, 200 + i % 100, n_ctx + i);
        if (llama_decode(ctx, step) != 0) die("llama_decode (step) failed");
    }
    double decode_ms = now_ms() - t1;
    llama_batch_free(step);

    printf("{\"batch\":%d,\"threads\":%d,\"n_ctx\":%d,\"steps\":%d,\"prefill_ms\":%.1f,"
           "\"decode_ms\":%.1f,\"tok_s\":%.3f,\"steps_s\":%.3f}\n",
           n_seq, threads, n_ctx, steps, prefill_ms, decode_ms,
           n_seq * steps * 1000.0 / decode_ms, steps * 1000.0 / decode_ms);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
