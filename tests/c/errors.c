/*
 * errors.c - exercises every error path of dam's C API (and the contract around them) on a
 * real model: NULL pointers, wrong struct_size, version mismatch, bad images, regions, options,
 * buffer too small + last caption, cancellation (before, from a callback, from another thread),
 * a busy session, load progress and its cancellation, log routing, frees of NULL,
 * thread-local errors, a session outliving its model.
 *
 *   errors LLM.gguf VISION.gguf
 *
 * Prints one line per failed check and a summary; exits 0 when every check passed.
 * Built by tests/capi.rs with -std=c99 -Wall -Wextra -Werror -pedantic -pthread.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stddef.h>

#include "dam.h"

static int n_pass = 0, n_fail = 0;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (cond) {                                                                         \
            n_pass++;                                                                       \
        } else {                                                                            \
            n_fail++;                                                                       \
            printf("FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,          \
                   dam_last_error());                                                       \
        }                                                                                   \
    } while (0)

/* The status, and that dam_last_error() is set for every error. */
#define CHECK_STATUS(expr, expected)                                                        \
    do {                                                                                    \
        dam_status st_ = (expr);                                                            \
        if (st_ == (expected) && (st_ == DAM_STATUS_OK || dam_last_error()[0] != '\0')) {   \
            n_pass++;                                                                       \
        } else {                                                                            \
            n_fail++;                                                                       \
            printf("FAIL %s:%d: %s -> %s, expected %s (last error: %s)\n", __FILE__,        \
                   __LINE__, #expr, dam_status_string(st_), dam_status_string(expected),    \
                   dam_last_error());                                                       \
        }                                                                                   \
    } while (0)

static const char *llm_path, *vision_path;

enum { W = 64, H = 48 };
static unsigned char rgb[W * H * 3], rgba[W * H * 4], mask[W * H], empty_mask[W * H];

static void make_images(void) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            unsigned char r = (unsigned char)(x * 4), g = (unsigned char)(y * 5),
                          b = (unsigned char)((x + y) * 2);
            unsigned char *p = rgb + (y * W + x) * 3, *q = rgba + (y * W + x) * 4;
            p[0] = q[0] = r;
            p[1] = q[1] = g;
            p[2] = q[2] = b;
            int inside = x >= 16 && x < 40 && y >= 10 && y < 30;
            q[3] = inside ? 255 : 0;
            mask[y * W + x] = inside ? 255 : 0;
            empty_mask[y * W + x] = 0;
        }
}

static dam_image_view view(const unsigned char *data, uint32_t w, uint32_t h, size_t stride,
                           int32_t format) {
    dam_image_view v;
    v.data = data;
    v.width = w;
    v.height = h;
    v.stride_bytes = stride;
    v.format = format;
    return v;
}

static dam_region region_of(int32_t kind) {
    dam_region r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    r.kind = kind;
    return r;
}

static dam_region mask_region(const unsigned char *m) {
    dam_region r = region_of(DAM_REGION_KIND_MASK);
    r.mask = view(m, W, H, W, DAM_PIXEL_FORMAT_GRAY8);
    return r;
}

static dam_describe_options greedy(uint32_t max_tokens) {
    dam_describe_options o = dam_describe_options_default();
    o.temperature = 0.0f;
    o.max_new_tokens = max_tokens;
    return o;
}

/* ----------------------------------------------------------------- callbacks */

typedef struct {
    int stages[8];
    int n;
    int stop_at; /* stage at which to return false, -1 = never */
} progress_state;

static bool on_progress(dam_load_stage stage, float progress, void *ud) {
    progress_state *p = (progress_state *)ud;
    if (p->n < 8) p->stages[p->n++] = (int)stage;
    (void)progress;
    return (int)stage != p->stop_at;
}

typedef struct {
    int lines;
    int bad_level;
} log_state;

static void on_log(dam_log_level level, const char *text, void *ud) {
    log_state *l = (log_state *)ud;
    l->lines++;
    if (level < DAM_LOG_LEVEL_DEBUG || level > DAM_LOG_LEVEL_ERROR || text == NULL) l->bad_level++;
}

typedef struct {
    dam_session *session;
    int pieces;
    int stop_after;      /* return false after this many pieces (0 = never) */
    int cancel_after;    /* call dam_session_cancel after this many pieces (0 = never) */
    dam_status reentrant; /* status of a nested dam_describe from the callback */
    int try_reentrant;
    size_t bytes;
} token_state;

static const dam_image_view *g_image;
static const dam_region *g_region;

static bool on_token(const char *piece, size_t len, void *ud) {
    token_state *t = (token_state *)ud;
    t->pieces++;
    t->bytes += len;
    if (piece[len] != '\0') t->bytes += 1000000; /* must be NUL-terminated */
    if (t->try_reentrant && t->pieces == 1) {
        dam_describe_options o = greedy(2);
        char buf[64];
        t->reentrant = dam_describe(t->session, g_image, g_region, &o, NULL, NULL, buf, sizeof buf, NULL);
    }
    if (t->cancel_after && t->pieces == t->cancel_after) dam_session_cancel(t->session);
    return !(t->stop_after && t->pieces >= t->stop_after);
}

/* Cancel from another thread: the callback waits (bounded) until the other thread cancelled. */
typedef struct {
    dam_session *session;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int first_piece, cancelled;
} cross_state;

static void *canceller(void *arg) {
    cross_state *c = (cross_state *)arg;
    pthread_mutex_lock(&c->mu);
    while (!c->first_piece) pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    dam_status st = dam_session_cancel(c->session);
    pthread_mutex_lock(&c->mu);
    c->cancelled = st == DAM_STATUS_OK ? 1 : -1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static bool on_token_cross(const char *piece, size_t len, void *ud) {
    cross_state *c = (cross_state *)ud;
    (void)piece;
    (void)len;
    pthread_mutex_lock(&c->mu);
    c->first_piece = 1;
    pthread_cond_broadcast(&c->cv);
    while (!c->cancelled) pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return true;
}

static void *other_thread_error(void *arg) {
    /* A fresh thread has no error message, whatever other threads did. */
    *(int *)arg = dam_last_error()[0] == '\0';
    return NULL;
}

/* ----------------------------------------------------------------- checks */

static void check_static_functions(void) {
    CHECK(dam_version() != NULL && dam_version()[0] != '\0');
    CHECK(dam_api_version() == DAM_API_VERSION);
    CHECK(DAM_API_VERSION == ((DAM_API_VERSION_MAJOR << 16) | DAM_API_VERSION_MINOR));
    const char *info = dam_backend_info();
    CHECK(info != NULL && info[0] == '{' && strstr(info, "\"backends\"") && strstr(info, "\"simd\""));
    CHECK(dam_backend_info() == info); /* static: the same string every time */
    CHECK(strcmp(dam_status_string(DAM_STATUS_OK), "DAM_STATUS_OK") == 0);
    CHECK(strcmp(dam_status_string(DAM_STATUS_INTERNAL), "DAM_STATUS_INTERNAL") == 0);
    CHECK(strcmp(dam_status_string(12345), "unknown status") == 0);
    CHECK(dam_last_error() != NULL && dam_last_error()[0] == '\0');

    dam_model_params mp = dam_model_default_params();
    CHECK(mp.struct_size == sizeof(dam_model_params));
    CHECK(mp.log_callback == NULL && mp.progress_callback == NULL);
    dam_session_params sp = dam_session_default_params();
    CHECK(sp.struct_size == sizeof(dam_session_params));
    dam_describe_options o = dam_describe_options_default();
    CHECK(o.struct_size == sizeof(dam_describe_options) && o.max_new_tokens == 512 && o.query == NULL);

    /* The 1.3 names and their older aliases give the same defaults. */
    dam_model_params mp2 = dam_model_params_default();
    CHECK(memcmp(&mp, &mp2, sizeof mp) == 0);
    dam_session_params sp2 = dam_session_params_default();
    CHECK(memcmp(&sp, &sp2, sizeof sp) == 0);
    DamBatchTokenCallback old_name = (dam_batch_token_callback)NULL;
    CHECK(old_name == NULL);

    /* Frees of NULL, and NULL-tolerant queries. */
    dam_model_free(NULL);
    dam_session_free(NULL);
    CHECK(dam_model_max_frames(NULL) == 0);
    CHECK_STATUS(dam_session_cancel(NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_session_last_caption(NULL, NULL, 0, NULL), DAM_STATUS_INVALID_ARGUMENT);
    dam_timings t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    CHECK_STATUS(dam_session_timings(NULL, &t), DAM_STATUS_INVALID_ARGUMENT);
}

static void check_load_errors(void) {
    dam_model *m = (dam_model *)&m; /* must be reset to NULL on failure */
    dam_model_params mp = dam_model_default_params();
    mp.n_threads = 1;

    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, NULL),
                 DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, NULL, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(m == NULL);
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, NULL, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, "", vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);

    /* Header/library mismatch: a newer minor, another major. */
    CHECK_STATUS(dam_model_load(DAM_API_VERSION + 1, llm_path, vision_path, &mp, &m),
                 DAM_STATUS_VERSION_MISMATCH);
    CHECK(strstr(dam_last_error(), "dam.h") != NULL);
    CHECK_STATUS(dam_model_load(DAM_API_VERSION + (1u << 16), llm_path, vision_path, &mp, &m),
                 DAM_STATUS_VERSION_MISMATCH);
    CHECK_STATUS(dam_model_load(0, llm_path, vision_path, &mp, &m), DAM_STATUS_VERSION_MISMATCH);
    CHECK(m == NULL);

    /* Wrong struct_size: too small is an error, larger means a newer header. */
    mp.struct_size = 4;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "struct_size") != NULL);
    mp.struct_size = 0;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    {
        unsigned char big[sizeof(dam_model_params) + 16];
        memset(big, 0, sizeof big);
        dam_model_params d = dam_model_default_params();
        memcpy(big, &d, sizeof d);
        uint32_t size = (uint32_t)sizeof big;
        memcpy(big, &size, sizeof size);
        CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, (const dam_model_params *)(void *)big, &m),
                     DAM_STATUS_VERSION_MISMATCH);
    }
    mp = dam_model_default_params();

    /* Out-of-range enum values and counts. */
    mp.kv_type = 7;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    mp.kv_type = DAM_KV_TYPE_Q8_0 + 1; /* one past the last value */
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "dam_kv_type") != NULL);
    /* A q8_0 KV cache (1.5) needs flash attention (off is refused) and heads
       whose width is a multiple of 32 (the tiny model's are 16 wide). */
    mp.kv_type = DAM_KV_TYPE_Q8_0;
    mp.flash_attn = DAM_FLASH_ATTN_OFF;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "flash attention") != NULL);
    CHECK(m == NULL);
    mp.flash_attn = DAM_FLASH_ATTN_AUTO;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "multiple of 32") != NULL);
    CHECK(m == NULL);
    mp = dam_model_default_params();
    mp.flash_attn = -1;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    mp = dam_model_default_params();
    mp.n_threads = -2;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    mp = dam_model_default_params();
    mp.n_threads = 513;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    mp = dam_model_default_params();
    CHECK(mp.n_seq_max == 4);
    mp.n_seq_max = 65;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "n_seq_max") != NULL);
    /* An API 1.0 caller: its struct ends before n_seq_max, which gets the default. */
    mp = dam_model_default_params();
    mp.struct_size = (uint32_t)offsetof(dam_model_params, n_seq_max);
    mp.n_seq_max = 65; /* beyond the caller's struct: never read */
    CHECK_STATUS(dam_model_load((1u << 16) | 0u, llm_path, vision_path, &mp, &m), DAM_STATUS_OK);
    dam_model_free(m);
    m = NULL;
    mp = dam_model_default_params();
    mp.log_level = 9;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_INVALID_ARGUMENT);
    mp = dam_model_default_params();
    mp.n_threads = 1;

    /* Files: missing, swapped, not GGUF. */
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, "/nonexistent/x-llm-f32.gguf", vision_path, &mp, &m),
                 DAM_STATUS_IO);
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, "/nonexistent/x-vision-f32.gguf", &mp, &m),
                 DAM_STATUS_IO);
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, vision_path, llm_path, &mp, &m), DAM_STATUS_INVALID_MODEL);
    CHECK(m == NULL);

    /* Progress: every stage in order; false at a stage cancels. */
    progress_state ps;
    memset(&ps, 0, sizeof ps);
    ps.stop_at = DAM_LOAD_STAGE_VISION_LOADED;
    mp.progress_callback = on_progress;
    mp.progress_user_data = &ps;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_CANCELLED);
    CHECK(m == NULL);
    CHECK(ps.n == 2 && ps.stages[0] == DAM_LOAD_STAGE_START && ps.stages[1] == DAM_LOAD_STAGE_VISION_LOADED);
    memset(&ps, 0, sizeof ps);
    ps.stop_at = DAM_LOAD_STAGE_DONE;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_CANCELLED);
    CHECK(m == NULL && ps.n == 4);
    memset(&ps, 0, sizeof ps);
    ps.stop_at = -1;
    /* Logging: a callback at DEBUG level sees llama.cpp's load lines. */
    log_state ls;
    memset(&ls, 0, sizeof ls);
    mp.log_callback = on_log;
    mp.log_user_data = &ls;
    mp.log_level = DAM_LOG_LEVEL_DEBUG;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_OK);
    CHECK(m != NULL);
    CHECK(ps.n == 4 && ps.stages[0] == 0 && ps.stages[1] == 1 && ps.stages[2] == 2 && ps.stages[3] == 3);
    CHECK(ls.lines > 0 && ls.bad_level == 0);
    /* A session of this model logs to the same callback; describing works. */
    dam_session *s = NULL;
    CHECK_STATUS(dam_session_new(m, NULL, &s), DAM_STATUS_OK);
    dam_model_free(m);
    /* The session outlives its model. */
    dam_image_view img = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    dam_region r = mask_region(mask);
    dam_describe_options o = greedy(4);
    char buf[512];
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, buf, sizeof buf, NULL), DAM_STATUS_OK);
    dam_session_free(s);

    /* An error on this thread is not visible on another one. */
    pthread_t th;
    int fresh = 0;
    CHECK(dam_last_error()[0] != '\0');
    CHECK(pthread_create(&th, NULL, other_thread_error, &fresh) == 0);
    pthread_join(th, NULL);
    CHECK(fresh == 1);
}

static void check_session_errors(dam_model *m) {
    dam_session *s = (dam_session *)&s;
    CHECK_STATUS(dam_session_new(NULL, NULL, &s), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(s == NULL);
    CHECK_STATUS(dam_session_new(m, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    dam_session_params sp = dam_session_default_params();
    sp.struct_size = 1;
    CHECK_STATUS(dam_session_new(m, &sp, &s), DAM_STATUS_INVALID_ARGUMENT);
    sp = dam_session_default_params();
    sp.n_threads = -1;
    CHECK_STATUS(dam_session_new(m, &sp, &s), DAM_STATUS_INVALID_ARGUMENT);
    /* Wrong object type. */
    CHECK_STATUS(dam_session_new((const dam_model *)(const void *)rgb, NULL, &s), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(dam_model_max_frames(m) >= 2);
}

static void check_describe_errors(dam_session *s) {
    dam_image_view img = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    dam_region r = mask_region(mask);
    dam_describe_options o = greedy(6);
    char buf[1024];
    size_t len = 99;

    CHECK_STATUS(dam_describe(NULL, &img, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(len == 0 && buf[0] == '\0');
    CHECK_STATUS(dam_describe(s, NULL, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe(s, &img, NULL, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe((dam_session *)(void *)rgb, &img, &r, &o, NULL, NULL, buf, sizeof buf, &len),
                 DAM_STATUS_INVALID_ARGUMENT);

    /* Bad images. */
    dam_image_view bad = img;
    bad.stride_bytes = W * 3 - 1;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "stride") != NULL);
    bad.stride_bytes = 0;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bad = img;
    bad.stride_bytes = (size_t)-1;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bad = img;
    bad.data = NULL;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bad = img;
    bad.width = 0;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bad = img;
    bad.height = 100000;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bad = img;
    bad.format = 17;
    CHECK_STATUS(dam_describe(s, &bad, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);

    /* Bad regions. */
    dam_region br = r;
    br.struct_size = 8;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    br = r;
    br.kind = 99;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    dam_point pts[2] = {{20.0f, 20.0f}, {30.0f, 25.0f}};
    br = region_of(DAM_REGION_KIND_POINTS);
    br.points = pts;
    br.n_points = 2;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_UNSUPPORTED_REGION);
    br = region_of(DAM_REGION_KIND_SCRIBBLE);
    br.n_points = 3; /* points NULL */
    br.brush_width = 4;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    br.n_points = 0;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);
    br.points = pts;
    br.n_points = 2;
    br.brush_width = -1;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    br = region_of(DAM_REGION_KIND_BOX);
    br.x0 = 100;
    br.y0 = 100;
    br.x1 = 200;
    br.y1 = 200; /* outside the 64x48 image */
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);
    br.x0 = 30;
    br.x1 = 10; /* inverted */
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);
    br = mask_region(empty_mask);
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);
    br = mask_region(mask);
    br.mask.width = W / 2;
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);
    br = region_of(DAM_REGION_KIND_ALPHA); /* RGB has no alpha */
    CHECK_STATUS(dam_describe(s, &img, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);

    /* Bad options. */
    dam_describe_options bo = o;
    bo.struct_size = 3;
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo = o;
    bo.top_p = 0.0f;
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo = o;
    bo.temperature = -1.0f;
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo = o;
    bo.max_new_tokens = 0;
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo = o;
    bo.length_kind = 42;
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo = o;
    bo.length_kind = DAM_LENGTH_WORDS;
    bo.length_value = 0;
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo = o;
    bo.query = "What is <image> here?";
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    bo.query = "\xff\xfe not utf-8";
    CHECK_STATUS(dam_describe(s, &img, &r, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);

    /* Valid alternatives work: alpha of RGBA, BGRA, gray, box, scribble, a padded stride,
     * options NULL (defaults), a query and a length. */
    dam_image_view rgba_img = view(rgba, W, H, W * 4, DAM_PIXEL_FORMAT_RGBA8);
    dam_region ar = region_of(DAM_REGION_KIND_ALPHA);
    CHECK_STATUS(dam_describe(s, &rgba_img, &ar, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    rgba_img.format = DAM_PIXEL_FORMAT_BGRA8;
    CHECK_STATUS(dam_describe(s, &rgba_img, &ar, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    dam_image_view gray_img = view(mask, W, H, W, DAM_PIXEL_FORMAT_GRAY8);
    CHECK_STATUS(dam_describe(s, &gray_img, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    dam_image_view padded = view(rgb, W - 1, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    br = region_of(DAM_REGION_KIND_BOX);
    br.x0 = 0.25f;
    br.y0 = 0.25f;
    br.x1 = 0.75f;
    br.y1 = 0.75f;
    br.normalized = 1;
    CHECK_STATUS(dam_describe(s, &padded, &br, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    br = region_of(DAM_REGION_KIND_SCRIBBLE);
    br.points = pts;
    br.n_points = 2;
    br.brush_width = 6;
    bo = o;
    bo.query = "What is this?";
    bo.length_kind = DAM_LENGTH_ABOUT_WORDS;
    bo.length_value = 10;
    CHECK_STATUS(dam_describe(s, &img, &br, &bo, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    dam_describe_options few = greedy(3);
    few.temperature = 0.7f;
    few.seed = 5;
    CHECK_STATUS(dam_describe(s, &img, &r, &few, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(len == strlen(buf) + 1);
}

static void check_buffers(dam_session *s) {
    dam_image_view img = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    dam_region r = mask_region(mask);
    dam_describe_options o = greedy(12);
    char full[2048], small[2], again[2048];
    size_t len = 0, len2 = 0;

    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, full, sizeof full, &len), DAM_STATUS_OK);
    CHECK(len == strlen(full) + 1 && len > 1);

    /* out NULL: a size query that still generates and keeps the caption. */
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, NULL, 0, &len2), DAM_STATUS_BUFFER_TOO_SMALL);
    CHECK(len2 == len);
    CHECK(strstr(dam_last_error(), "dam_session_last_caption") != NULL);
    size_t need = 0;
    CHECK_STATUS(dam_session_last_caption(s, NULL, 0, &need), DAM_STATUS_BUFFER_TOO_SMALL);
    CHECK(need == len);
    CHECK_STATUS(dam_session_last_caption(s, again, need - 1, &need), DAM_STATUS_BUFFER_TOO_SMALL);
    memset(again, 'x', sizeof again);
    CHECK_STATUS(dam_session_last_caption(s, again, need, &len2), DAM_STATUS_OK);
    CHECK(len2 == len && strcmp(again, full) == 0);

    /* A buffer too small: nothing but an empty string is written. */
    small[0] = 'x';
    small[1] = 'y';
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, small, sizeof small, &len2), DAM_STATUS_BUFFER_TOO_SMALL);
    CHECK(small[0] == '\0' && small[1] == 'y' && len2 == len);
    CHECK_STATUS(dam_session_last_caption(s, again, sizeof again, NULL), DAM_STATUS_OK);
    CHECK(strcmp(again, full) == 0);

    /* Timings: wrong struct_size, then the real thing. */
    dam_timings t;
    memset(&t, 0, sizeof t);
    CHECK_STATUS(dam_session_timings(s, &t), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_session_timings(s, NULL), DAM_STATUS_INVALID_ARGUMENT);
    t.struct_size = sizeof t;
    CHECK_STATUS(dam_session_timings(s, &t), DAM_STATUS_OK);
    CHECK(t.struct_size == sizeof t && t.n_prompt_tokens > 0 && t.n_generated_tokens > 0 &&
          t.n_generated_tokens <= 12 && t.vision_ms > 0.0 && t.preprocess_ms >= 0.0);

    /* A failed call clears the last caption and the timings. */
    dam_region empty = mask_region(empty_mask);
    CHECK_STATUS(dam_describe(s, &img, &empty, &o, NULL, NULL, full, sizeof full, &len), DAM_STATUS_INVALID_REGION);
    CHECK_STATUS(dam_session_last_caption(s, again, sizeof again, &len2), DAM_STATUS_OK);
    CHECK(len2 == 1 && again[0] == '\0');
    CHECK_STATUS(dam_session_timings(s, &t), DAM_STATUS_OK);
    CHECK(t.n_generated_tokens == 0);
}

static void check_cancel_and_callbacks(dam_session *s) {
    dam_image_view img = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    dam_region r = mask_region(mask);
    dam_describe_options o = greedy(16);
    char full[2048], buf[2048];
    size_t len = 0;
    g_image = &img;
    g_region = &r;

    /* The full greedy caption, streamed: pieces concatenate to it. */
    token_state ts;
    memset(&ts, 0, sizeof ts);
    ts.session = s;
    CHECK_STATUS(dam_describe(s, &img, &r, &o, on_token, &ts, full, sizeof full, &len), DAM_STATUS_OK);
    CHECK(ts.pieces > 0 && ts.bytes == strlen(full));

    /* Cancel before describe: the next call is cancelled, the one after works. */
    CHECK_STATUS(dam_session_cancel(s), DAM_STATUS_OK);
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_CANCELLED);
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(strcmp(buf, full) == 0);

    /* Returning false stops early with OK and a prefix of the caption. */
    memset(&ts, 0, sizeof ts);
    ts.session = s;
    ts.stop_after = 1;
    CHECK_STATUS(dam_describe(s, &img, &r, &o, on_token, &ts, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(ts.pieces == 1 && strncmp(full, buf, strlen(buf)) == 0 && strlen(buf) <= strlen(full));

    /* Cancel from the callback. */
    memset(&ts, 0, sizeof ts);
    ts.session = s;
    ts.cancel_after = 1;
    CHECK_STATUS(dam_describe(s, &img, &r, &o, on_token, &ts, buf, sizeof buf, &len), DAM_STATUS_CANCELLED);
    CHECK(ts.pieces == 1);

    /* A nested call on the same session (busy) is refused, the outer one goes on. */
    memset(&ts, 0, sizeof ts);
    ts.session = s;
    ts.try_reentrant = 1;
    CHECK_STATUS(dam_describe(s, &img, &r, &o, on_token, &ts, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(ts.reentrant == DAM_STATUS_INVALID_ARGUMENT && strcmp(buf, full) == 0);

    /* Cancel from another thread while generating. */
    cross_state cs;
    memset(&cs, 0, sizeof cs);
    cs.session = s;
    pthread_mutex_init(&cs.mu, NULL);
    pthread_cond_init(&cs.cv, NULL);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, canceller, &cs) == 0);
    CHECK_STATUS(dam_describe(s, &img, &r, &o, on_token_cross, &cs, buf, sizeof buf, &len), DAM_STATUS_CANCELLED);
    pthread_join(th, NULL);
    CHECK(cs.cancelled == 1);
    pthread_mutex_destroy(&cs.mu);
    pthread_cond_destroy(&cs.cv);
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(strcmp(buf, full) == 0);
}

static void check_video(dam_session *s, uint32_t max_frames) {
    dam_image_view imgs[9];
    dam_region regs[9];
    for (int i = 0; i < 9; i++) {
        imgs[i] = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
        regs[i] = mask_region(mask);
    }
    dam_describe_options o = greedy(6);
    char buf[1024];
    size_t len = 0;
    CHECK_STATUS(dam_describe_video(s, imgs, regs, 0, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_video(s, imgs, regs, max_frames + 1, &o, NULL, NULL, buf, sizeof buf, &len),
                 DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_video(s, NULL, regs, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_video(s, imgs, NULL, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_video(NULL, imgs, regs, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    regs[1].struct_size = 12;
    CHECK_STATUS(dam_describe_video(s, imgs, regs, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    regs[1] = mask_region(mask);
    imgs[1].stride_bytes = 1;
    CHECK_STATUS(dam_describe_video(s, imgs, regs, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "images[1]") != NULL);
    imgs[1].stride_bytes = W * 3;
    regs[0] = mask_region(empty_mask);
    regs[1] = mask_region(empty_mask);
    CHECK_STATUS(dam_describe_video(s, imgs, regs, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_INVALID_REGION);
    regs[1] = region_of(DAM_REGION_KIND_POINTS);
    CHECK_STATUS(dam_describe_video(s, imgs, regs, 2, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_UNSUPPORTED_REGION);
    /* One empty frame is dropped; the rest is described. */
    regs[1] = mask_region(mask);
    regs[2] = mask_region(mask);
    CHECK_STATUS(dam_describe_video(s, imgs, regs, 3, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(len == strlen(buf) + 1);
    regs[0] = mask_region(mask);
    CHECK_STATUS(dam_describe_video(s, imgs, regs, max_frames, &o, NULL, NULL, buf, sizeof buf, &len), DAM_STATUS_OK);
}

/* ----------------------------------------------------------------- batches */

typedef struct {
    char text[4][1024];
    size_t len[4];
    int stop_region; /* region whose stream returns false, -1 = none */
    int calls[4];
} batch_state;

static bool on_batch_token(size_t region, const char *piece, size_t len, void *ud) {
    batch_state *b = (batch_state *)ud;
    if (region >= 4 || strlen(piece) != len || b->len[region] + len >= sizeof b->text[0]) {
        return false;
    }
    memcpy(b->text[region] + b->len[region], piece, len + 1);
    b->len[region] += len;
    b->calls[region]++;
    return (int)region != b->stop_region;
}

static void check_batch(dam_session *s) {
    dam_image_view img = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    dam_region regs[4];
    regs[0] = mask_region(mask);
    regs[1] = region_of(DAM_REGION_KIND_BOX);
    regs[1].x0 = 2;
    regs[1].y0 = 3;
    regs[1].x1 = W - 4;
    regs[1].y1 = H / 2;
    regs[2] = region_of(DAM_REGION_KIND_BOX);
    regs[2].normalized = 1;
    regs[2].x0 = 0.5f;
    regs[2].y0 = 0.25f;
    regs[2].x1 = 1.0f;
    regs[2].y1 = 0.9f;
    regs[3] = mask_region(mask);
    dam_describe_options o = greedy(10);
    char single[4][1024], buf[1024];
    size_t len = 0;
    for (int i = 0; i < 4; i++) {
        CHECK_STATUS(dam_describe(s, &img, &regs[i], &o, NULL, NULL, single[i], sizeof single[i], &len), DAM_STATUS_OK);
    }
    CHECK(dam_session_caption_count(s) == 1);
    CHECK_STATUS(dam_session_caption(s, 0, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(strcmp(buf, single[3]) == 0);
    CHECK_STATUS(dam_session_caption(s, 1, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);

    /* The batch gives each region's single-call caption, streamed per region. */
    batch_state b;
    memset(&b, 0, sizeof b);
    b.stop_region = -1;
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 4, &o, on_batch_token, &b), DAM_STATUS_OK);
    CHECK(dam_session_caption_count(s) == 4);
    for (size_t i = 0; i < 4; i++) {
        CHECK_STATUS(dam_session_caption(s, i, buf, sizeof buf, &len), DAM_STATUS_OK);
        CHECK(strcmp(buf, single[i]) == 0 && len == strlen(buf) + 1);
        CHECK(strcmp(b.text[i], single[i]) == 0);
    }
    CHECK_STATUS(dam_session_caption(s, 4, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_session_caption(s, 0, buf, 1, &len), DAM_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == strlen(single[0]) + 1);
    CHECK_STATUS(dam_session_last_caption(s, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(strcmp(buf, single[0]) == 0);
    dam_timings t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    CHECK_STATUS(dam_session_timings(s, &t), DAM_STATUS_OK);
    CHECK(t.vision_ms > 0 && t.n_generated_tokens >= 4);

    /* No callback; stopping one region's stream leaves the others whole. */
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 4, NULL, NULL, NULL), DAM_STATUS_OK);
    memset(&b, 0, sizeof b);
    b.stop_region = 1;
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 4, &o, on_batch_token, &b), DAM_STATUS_OK);
    CHECK(b.calls[1] == 1);
    CHECK_STATUS(dam_session_caption(s, 2, buf, sizeof buf, &len), DAM_STATUS_OK);
    CHECK(strcmp(buf, single[2]) == 0);

    /* Bad arguments. */
    CHECK_STATUS(dam_describe_batch(NULL, &img, regs, 4, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_batch(s, NULL, regs, 4, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_batch(s, &img, NULL, 4, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 0, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 65, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    regs[2].struct_size = 12;
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 4, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dam_last_error(), "regions[2]") != NULL);
    regs[2] = mask_region(empty_mask);
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 4, &o, NULL, NULL), DAM_STATUS_INVALID_REGION);
    CHECK(strstr(dam_last_error(), "region 2") != NULL);
    CHECK(dam_session_caption_count(s) == 0); /* a failed describe clears the captions */
    regs[2] = region_of(DAM_REGION_KIND_POINTS);
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 4, &o, NULL, NULL), DAM_STATUS_UNSUPPORTED_REGION);
    img.stride_bytes = 1;
    CHECK_STATUS(dam_describe_batch(s, &img, regs, 2, &o, NULL, NULL), DAM_STATUS_INVALID_ARGUMENT);
    CHECK(dam_session_caption_count(NULL) == 0);
    CHECK_STATUS(dam_session_caption(NULL, 0, buf, sizeof buf, &len), DAM_STATUS_INVALID_ARGUMENT);
}

/* The greedy 10-token caption of the mask region into buf. */
static void describe_mask(dam_session *s, char *buf, size_t cap) {
    dam_image_view img = view(rgb, W, H, W * 3, DAM_PIXEL_FORMAT_RGB8);
    dam_region r = mask_region(mask);
    dam_describe_options o = greedy(10);
    size_t len = 0;
    CHECK_STATUS(dam_describe(s, &img, &r, &o, NULL, NULL, buf, cap, &len), DAM_STATUS_OK);
}

/* Device parameters (1.2): filled through a pointer and a size; without a
 * GPU every choice runs on the CPU and gives the same caption. */
static void check_devices(const char *reference_caption) {
    dam_device_params d;
    memset(&d, 0xab, sizeof d);
    CHECK_STATUS(dam_device_params_init(&d, sizeof d), DAM_STATUS_OK);
    CHECK(d.struct_size == sizeof d && d.main_gpu == 0 && d.vision_device == DAM_VISION_DEVICE_GPU &&
          d.repack == 1);
    CHECK_STATUS(dam_device_params_init(NULL, sizeof d), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_device_params_init(&d, 4), DAM_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(dam_device_params_init(&d, sizeof d + 8), DAM_STATUS_VERSION_MISMATCH);
    CHECK(dam_model_default_params().n_gpu_layers == -1);

    dam_model_params mp = dam_model_default_params();
    mp.n_threads = 2;
    dam_model *m = (dam_model *)1;
    dam_device_params bad = d;
    bad.vision_device = 7;
    CHECK_STATUS(dam_model_load_on(DAM_API_VERSION, llm_path, vision_path, &mp, &bad, &m),
                 DAM_STATUS_INVALID_ARGUMENT);
    CHECK(m == NULL && strstr(dam_last_error(), "vision_device"));
    bad = d;
    bad.main_gpu = -1;
    CHECK_STATUS(dam_model_load_on(DAM_API_VERSION, llm_path, vision_path, &mp, &bad, &m),
                 DAM_STATUS_INVALID_ARGUMENT);
    bad = d;
    bad.repack = 2;
    CHECK_STATUS(dam_model_load_on(DAM_API_VERSION, llm_path, vision_path, &mp, &bad, &m),
                 DAM_STATUS_INVALID_ARGUMENT);
    CHECK(m == NULL && strstr(dam_last_error(), "repack"));
    bad = d;
    bad.struct_size = 2;
    CHECK_STATUS(dam_model_load_on(DAM_API_VERSION, llm_path, vision_path, &mp, &bad, &m),
                 DAM_STATUS_INVALID_ARGUMENT);
    bad.struct_size = sizeof d + 4;
    CHECK_STATUS(dam_model_load_on(DAM_API_VERSION, llm_path, vision_path, &mp, &bad, &m),
                 DAM_STATUS_VERSION_MISMATCH);

    /* The CPU explicitly, and NULL (defaults), describe as dam_model_load does. */
    dam_device_params cpu = d;
    cpu.vision_device = DAM_VISION_DEVICE_CPU;
    cpu.repack = 0;
    mp.n_gpu_layers = 0;
    const dam_device_params *choices[2] = {&cpu, NULL};
    for (int i = 0; i < 2; i++) {
        CHECK_STATUS(dam_model_load_on(DAM_API_VERSION, llm_path, vision_path, &mp, choices[i], &m),
                     DAM_STATUS_OK);
        dam_session *s = NULL;
        CHECK_STATUS(dam_session_new(m, NULL, &s), DAM_STATUS_OK);
        char buf[1024];
        describe_mask(s, buf, sizeof buf);
        CHECK(strcmp(buf, reference_caption) == 0);
        dam_session_free(s);
        dam_model_free(m);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: errors LLM.gguf VISION.gguf\n");
        return 2;
    }
    llm_path = argv[1];
    vision_path = argv[2];
    make_images();

    check_static_functions();
    check_load_errors();

    dam_model *m = NULL;
    dam_model_params mp = dam_model_default_params();
    mp.n_threads = 2;
    CHECK_STATUS(dam_model_load(DAM_API_VERSION, llm_path, vision_path, &mp, &m), DAM_STATUS_OK);
    if (m == NULL) {
        printf("cannot load the model: %s\n", dam_last_error());
        return 1;
    }
    check_session_errors(m);
    dam_session *s = NULL;
    dam_session_params sp = dam_session_default_params();
    sp.n_threads = 1;
    CHECK_STATUS(dam_session_new(m, &sp, &s), DAM_STATUS_OK);
    if (s != NULL) {
        check_describe_errors(s);
        check_buffers(s);
        check_cancel_and_callbacks(s);
        check_video(s, dam_model_max_frames(m));
        check_batch(s);
        char ref[1024];
        describe_mask(s, ref, sizeof ref);
        check_devices(ref);
    }
    dam_session_free(s);
    dam_model_free(m);

    printf("errors.c: %d checks passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
