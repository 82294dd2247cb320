// Memory read bandwidth of this machine, for benches/compare.sh: sums a
// buffer much larger than the caches (default 2 GiB) with 1..N OpenMP
// threads, best of 5 passes each; also memcpy (read + write).
//
// usage: membw [MiB] [MAX_THREADS]
// prints one JSON object: {"bytes":..,"read_gbs":{"1":..,"2":..},"memcpy_gbs":..}

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 2048;
    int max_threads = argc > 2 ? atoi(argv[2]) : omp_get_max_threads();
    size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *a = aligned_alloc(64, n * sizeof(uint64_t));
    if (!a) return 1;
    for (size_t i = 0; i < n; i++) a[i] = i * 0x9E3779B97F4A7C15ull;
    uint64_t sink = 0;
    printf("{\"bytes\":%zu,\"read_gbs\":{", n * sizeof(uint64_t));
    for (int t = 1; t <= max_threads; t++) {
        double best = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            uint64_t s = 0;
            double t0 = now_s();
#pragma omp parallel for num_threads(t) reduction(^ : s) schedule(static)
            for (size_t i = 0; i < n; i += 8) {
                s ^= a[i] + a[i + 1] + a[i + 2] + a[i + 3] + a[i + 4] + a[i + 5] + a[i + 6] + a[i + 7];
            }
            double dt = now_s() - t0;
            sink ^= s;
            if (dt < best) best = dt;
        }
        printf("%s\"%d\":%.2f", t > 1 ? "," : "", t, n * sizeof(uint64_t) / best / 1e9);
    }
    // memcpy of half the buffer onto the other half (bytes read + written).
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        memcpy(a, a + n / 2, n / 2 * sizeof(uint64_t));
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    printf("},\"memcpy_gbs\":%.2f,\"sink\":%llu}\n", n * sizeof(uint64_t) / best / 1e9,
           (unsigned long long)(sink & 1));
    free(a);
    return 0;
}
