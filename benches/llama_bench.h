// What the llama.h-only benchmark programs (baseline.c, batch_decode.c)
// share: a clock, a log callback that keeps only errors, and a fatal exit.
// Define BENCH_NAME (the program's name, for messages) before including.

#ifndef DAM_LLAMA_BENCH_H
#define DAM_LLAMA_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "llama.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void die(const char *m) {
    fprintf(stderr, BENCH_NAME ": %s\n", m);
    exit(1);
}

#endif
