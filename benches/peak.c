// Arithmetic peak of this machine's cores, for reading benches/RESULTS.md:
// what a compute-bound stage can reach at best. Two loops with no memory
// traffic, on 1..N OpenMP threads, best of 5:
//   - f32 FMA: `vfmadd231ps` on 256-bit registers, 12 independent chains
//     (enough to cover the FMA latency on current x86 cores), 2 FLOP per
//     lane;
//   - int8 products as ggml's AVX2 kernels do them: `vpmaddubsw` (u8 x s8
//     pairs summed to i16) then `vpmaddwd` with ones (pairs to i32) and an
//     add, counted as 2 operations per u8 x s8 product (a multiply-add).
// Needs AVX2 and FMA (x86-64); elsewhere it says so and exits 2.
//
// usage: peak [MAX_THREADS]
// prints one JSON object: {"f32_gflops":{"1":..,"2":..},"int8_gops":{"1":..,"2":..}}

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

enum { CHAINS = 12, ITERS = 20 * 1000 * 1000 };

// The 12 chains written out, so that every accumulator stays in a register.
#define TWELVE(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

// FLOP done (CHAINS x 8 lanes x 2 per iteration); `sink` keeps the result live.
static double f32_loop(float seed, float *sink) {
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
#define INIT(i) __m256 acc##i = _mm256_set1_ps(seed + (float)(i));
    TWELVE(INIT)
#define FMA(i) acc##i = _mm256_fmadd_ps(acc##i, a, b);
    for (long it = 0; it < ITERS; it++) {
        TWELVE(FMA)
    }
#define SUM(i) s = _mm256_add_ps(s, acc##i);
    __m256 s = _mm256_setzero_ps();
    TWELVE(SUM)
    float out[8];
    _mm256_storeu_ps(out, s);
    *sink = out[0];
    return (double)ITERS * CHAINS * 8 * 2;
}

// Integer operations done (CHAINS x 32 products x 2 per iteration). Each
// chain multiplies its own accumulator's bytes, so nothing is loop-invariant.
static double int8_loop(int seed, int *sink) {
    const __m256i y = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
#define IINIT(i) __m256i iacc##i = _mm256_set1_epi32(seed + (i));
    TWELVE(IINIT)
#define DOT(i) iacc##i = _mm256_add_epi32(iacc##i, _mm256_madd_epi16(_mm256_maddubs_epi16(iacc##i, y), ones));
    for (long it = 0; it < ITERS; it++) {
        TWELVE(DOT)
    }
#define ISUM(i) s = _mm256_add_epi32(s, iacc##i);
    __m256i s = _mm256_setzero_si256();
    TWELVE(ISUM)
    *sink = _mm256_extract_epi32(s, 0);
    return (double)ITERS * CHAINS * 32 * 2;
}

// Best of 5 rates (G per second) of `loop` on `n` threads.
static double best_rate(int n, int f32) {
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double ops = 0, t0 = now_s();
#pragma omp parallel num_threads(n) reduction(+ : ops)
        {
            float fs;
            int is;
            ops += f32 ? f32_loop((float)omp_get_thread_num(), &fs) : int8_loop(omp_get_thread_num(), &is);
            if (f32 ? fs == 12345.f : is == 12345) ops += 1; // keep the results live
        }
        double rate = ops / (now_s() - t0) / 1e9;
        if (rate > best) best = rate;
    }
    return best;
}

int main(int argc, char **argv) {
    int max_threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    if (max_threads < 1) max_threads = 1;
    for (int k = 0; k < 2; k++) {
        printf(k == 0 ? "{\"f32_gflops\":{" : "},\"int8_gops\":{");
        for (int n = 1; n <= max_threads; n++) printf("%s\"%d\":%.1f", n > 1 ? "," : "", n, best_rate(n, k == 0));
    }
    printf("}}\n");
    return 0;
}
#else
int main(void) {
    fputs("peak: needs an x86-64 CPU with AVX2 and FMA (build with -march=native)\n", stderr);
    return 2;
}
#endif
