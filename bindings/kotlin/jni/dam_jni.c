/*
 * dam_jni.c - the JNI layer of dam's Kotlin bindings (class dev.dam.DamNative).
 *
 * Uses only include/dam.h. Rules it keeps (see bindings/kotlin/README.md):
 * - Strings cross as UTF-8 byte arrays, never through NewStringUTF / GetStringUTFChars
 *   (modified UTF-8 differs for NUL and characters outside the BMP).
 * - Java arrays are copied into C memory before dam runs (no pinned or critical regions held
 *   across a call that calls back into the JVM); direct ByteBuffers are read in place.
 * - Every buffer is checked against the size dam will read before its pointer goes to dam.
 * - Callbacks run on the calling thread with the caller's JNIEnv; each creates at most one
 *   local reference and deletes it. A Java exception in a callback is cleared, kept as a
 *   local reference, stops the dam call, and is rethrown when dam has returned: it never
 *   unwinds through dam, and no JNI call runs while it is pending.
 * - No global references: callbacks live only during the call that receives them.
 */
#include <jni.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dam.h"

#ifdef __ANDROID__
#include <android/log.h>
#endif

/* "Not set" for an int option: the library's default is kept (Kotlin passes it for null). */
#define UNSET INT32_MIN
/* describe modes (DamNative.MODE_*). */
#define MODE_SINGLE 0
#define MODE_VIDEO 1
#define MODE_BATCH 2

/* ------------------------------------------------------------------ errors */

/* Throws DamException.of(status, message bytes) unless an exception is already pending. */
static void throw_dam(JNIEnv *env, int32_t status, const char *message) {
    if ((*env)->ExceptionCheck(env)) return;
    jclass cls = (*env)->FindClass(env, "dev/dam/DamException");
    if (!cls) return;
    jmethodID of = (*env)->GetStaticMethodID(env, cls, "of", "(I[B)Ldev/dam/DamException;");
    if (!of) return;
    size_t n = strlen(message);
    jbyteArray bytes = (*env)->NewByteArray(env, (jsize)n);
    if (!bytes) return;
    (*env)->SetByteArrayRegion(env, bytes, 0, (jsize)n, (const jbyte *)message);
    jobject e = (*env)->CallStaticObjectMethod(env, cls, of, (jint)status, bytes);
    if (e && !(*env)->ExceptionCheck(env)) (*env)->Throw(env, (jthrowable)e);
}

/* Throws the calling thread's last dam error. */
static void throw_last(JNIEnv *env, int32_t status) { throw_dam(env, status, dam_last_error()); }

/* A byte[] of `n` bytes of `s`, or NULL with an exception pending. */
static jbyteArray bytes_of(JNIEnv *env, const char *s, size_t n) {
    if (n > INT32_MAX) {
        throw_dam(env, DAM_STATUS_INTERNAL, "string too long for a Java array");
        return NULL;
    }
    jbyteArray b = (*env)->NewByteArray(env, (jsize)n);
    if (b) (*env)->SetByteArrayRegion(env, b, 0, (jsize)n, (const jbyte *)s);
    return b;
}

/* A NUL-terminated copy of a byte[] (UTF-8 without NUL); NULL for NULL, or on error. */
static char *cstr(JNIEnv *env, jbyteArray b) {
    if (!b) return NULL;
    jsize n = (*env)->GetArrayLength(env, b);
    char *s = malloc((size_t)n + 1);
    if (!s) {
        throw_dam(env, DAM_STATUS_INTERNAL, "out of memory");
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, b, 0, n, (jbyte *)s);
    s[n] = 0;
    return s;
}

/* ------------------------------------------------------------------ callbacks */

/* The state of one call that has a Java callback. */
typedef struct {
    JNIEnv *env;
    jobject sink;           /* the Kotlin sink object (a local reference of the call) */
    jmethodID method;       /* its callback method */
    jthrowable error;       /* the first exception a callback threw (local ref), or NULL */
    dam_session *session;   /* cancelled on error, so a batch stops every region */
} call_ctx;

/* After a callback: keeps a pending exception for rethrow; true when one was pending. */
static bool caught(call_ctx *c) {
    JNIEnv *env = c->env;
    if (!(*env)->ExceptionCheck(env)) return false;
    jthrowable e = (*env)->ExceptionOccurred(env);
    (*env)->ExceptionClear(env);
    if (!c->error) c->error = e;
    if (c->session) dam_session_cancel(c->session);
    return true;
}

static bool on_piece(call_ctx *c, size_t region, const char *piece, size_t len) {
    if (c->error) return false;
    JNIEnv *env = c->env;
    jbyteArray b = bytes_of(env, piece, len);
    if (!b) return !caught(c);
    jboolean go = (*env)->CallBooleanMethod(env, c->sink, c->method, (jint)region, b);
    (*env)->DeleteLocalRef(env, b);
    return !caught(c) && go;
}

static bool on_token(const char *piece, size_t len, void *user) {
    return on_piece((call_ctx *)user, 0, piece, len);
}

static bool on_batch_token(size_t region, const char *piece, size_t len, void *user) {
    return on_piece((call_ctx *)user, region, piece, len);
}

static bool on_progress(dam_load_stage stage, float progress, void *user) {
    call_ctx *c = user;
    if (c->error) return false;
    jboolean go = (*c->env)->CallBooleanMethod(c->env, c->sink, c->method, (jint)stage, progress);
    return !caught(c) && go;
}

/* Log lines go to the platform's log (logcat on Android, stderr elsewhere): no Java object
 * is involved, so sessions that outlive their model need nothing kept alive. */
static void on_log(dam_log_level level, const char *text, void *user) {
    (void)user;
#ifdef __ANDROID__
    static const int prio[] = {ANDROID_LOG_DEBUG, ANDROID_LOG_INFO, ANDROID_LOG_WARN, ANDROID_LOG_ERROR};
    __android_log_write(prio[level >= 0 && level <= 3 ? level : 3], "dam", text);
#else
    (void)level;
    fputs(text, stderr);
#endif
}

/* Prepares a call's callback: `sink` may be NULL (no callback). False with an exception
 * pending when the sink lacks `name` with `sig`. */
static bool ctx_init(JNIEnv *env, call_ctx *c, jobject sink, const char *name, const char *sig,
                     dam_session *session) {
    memset(c, 0, sizeof *c);
    c->env = env;
    c->session = session;
    if (!sink) return true;
    jclass cls = (*env)->GetObjectClass(env, sink);
    c->method = (*env)->GetMethodID(env, cls, name, sig);
    (*env)->DeleteLocalRef(env, cls);
    c->sink = sink;
    return c->method != NULL;
}

/* ------------------------------------------------------------------ library */

JNIEXPORT jstring JNICALL Java_dev_dam_DamNative_version(JNIEnv *env, jclass cls) {
    (void)cls;
    return (*env)->NewStringUTF(env, dam_version()); /* ASCII */
}

JNIEXPORT jint JNICALL Java_dev_dam_DamNative_apiVersion(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return (jint)dam_api_version();
}

JNIEXPORT jint JNICALL Java_dev_dam_DamNative_headerApiVersion(JNIEnv *env, jclass cls) {
    (void)env, (void)cls;
    return (jint)DAM_API_VERSION;
}

JNIEXPORT jstring JNICALL Java_dev_dam_DamNative_statusName(JNIEnv *env, jclass cls, jint status) {
    (void)cls;
    return (*env)->NewStringUTF(env, dam_status_string(status)); /* ASCII */
}

JNIEXPORT jbyteArray JNICALL Java_dev_dam_DamNative_backendInfo(JNIEnv *env, jclass cls) {
    (void)cls;
    const char *s = dam_backend_info();
    return bytes_of(env, s, strlen(s));
}

/* ------------------------------------------------------------------ model, session */

/* ints: n_threads, n_ctx, kv_type, flash_attn, n_gpu_layers, n_seq_max, log_level (-1: no
 * log), main_gpu, vision_device, repack; UNSET keeps a default. */
enum { P_THREADS, P_CTX, P_KV, P_FLASH, P_GPU_LAYERS, P_SEQ_MAX, P_LOG, P_MAIN_GPU, P_VISION_DEV,
       P_REPACK, P_COUNT };

JNIEXPORT jlong JNICALL Java_dev_dam_DamNative_modelLoad(JNIEnv *env, jclass cls, jbyteArray llm,
                                                          jbyteArray vision, jintArray ints,
                                                          jobject progress) {
    (void)cls;
    jint p[P_COUNT];
    if (!llm || !vision || !ints || (*env)->GetArrayLength(env, ints) != P_COUNT) {
        throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, "modelLoad: bad arguments");
        return 0;
    }
    (*env)->GetIntArrayRegion(env, ints, 0, P_COUNT, p);
    dam_model_params mp = dam_model_default_params();
    dam_device_params dp;
    dam_device_params_init(&dp, sizeof dp);
    if (p[P_THREADS] != UNSET) mp.n_threads = p[P_THREADS];
    if (p[P_CTX] != UNSET) mp.n_ctx = (uint32_t)p[P_CTX];
    if (p[P_KV] != UNSET) mp.kv_type = p[P_KV];
    if (p[P_FLASH] != UNSET) mp.flash_attn = p[P_FLASH];
    if (p[P_GPU_LAYERS] != UNSET) mp.n_gpu_layers = p[P_GPU_LAYERS];
    if (p[P_SEQ_MAX] != UNSET) mp.n_seq_max = (uint32_t)p[P_SEQ_MAX];
    if (p[P_LOG] != UNSET && p[P_LOG] >= 0) {
        mp.log_callback = on_log;
        mp.log_level = p[P_LOG];
    }
    if (p[P_MAIN_GPU] != UNSET) dp.main_gpu = p[P_MAIN_GPU];
    if (p[P_VISION_DEV] != UNSET) dp.vision_device = p[P_VISION_DEV];
    if (p[P_REPACK] != UNSET) dp.repack = p[P_REPACK];
    call_ctx ctx;
    if (!ctx_init(env, &ctx, progress, "onProgress", "(IF)Z", NULL)) return 0;
    if (progress) {
        mp.progress_callback = on_progress;
        mp.progress_user_data = &ctx;
    }
    char *l = cstr(env, llm), *v = l ? cstr(env, vision) : NULL;
    dam_model *model = NULL;
    dam_status st = DAM_STATUS_INTERNAL;
    if (l && v) st = dam_model_load_on(DAM_API_VERSION, l, v, &mp, &dp, &model);
    free(l);
    free(v);
    if (ctx.error) {
        dam_model_free(model);
        (*env)->Throw(env, ctx.error);
        return 0;
    }
    if (st != DAM_STATUS_OK) {
        if (l && v) throw_last(env, st);
        return 0;
    }
    return (jlong)(intptr_t)model;
}

JNIEXPORT void JNICALL Java_dev_dam_DamNative_modelFree(JNIEnv *env, jclass cls, jlong model) {
    (void)env, (void)cls;
    dam_model_free((dam_model *)(intptr_t)model);
}

JNIEXPORT jint JNICALL Java_dev_dam_DamNative_modelMaxFrames(JNIEnv *env, jclass cls, jlong model) {
    (void)env, (void)cls;
    return (jint)dam_model_max_frames((const dam_model *)(intptr_t)model);
}

JNIEXPORT jlong JNICALL Java_dev_dam_DamNative_sessionNew(JNIEnv *env, jclass cls, jlong model,
                                                           jint n_threads) {
    (void)cls;
    dam_session_params sp = dam_session_default_params();
    sp.n_threads = n_threads;
    dam_session *s = NULL;
    dam_status st = dam_session_new((const dam_model *)(intptr_t)model, &sp, &s);
    if (st != DAM_STATUS_OK) {
        throw_last(env, st);
        return 0;
    }
    return (jlong)(intptr_t)s;
}

JNIEXPORT void JNICALL Java_dev_dam_DamNative_sessionFree(JNIEnv *env, jclass cls, jlong session) {
    (void)env, (void)cls;
    dam_session_free((dam_session *)(intptr_t)session);
}

JNIEXPORT void JNICALL Java_dev_dam_DamNative_sessionCancel(JNIEnv *env, jclass cls, jlong session) {
    (void)cls;
    dam_status st = dam_session_cancel((const dam_session *)(intptr_t)session);
    if (st != DAM_STATUS_OK) throw_last(env, st);
}

/* n_prompt_tokens, n_generated_tokens, preprocess, vision, prefill, decode (ms). */
JNIEXPORT jdoubleArray JNICALL Java_dev_dam_DamNative_sessionTimings(JNIEnv *env, jclass cls,
                                                                     jlong session) {
    (void)cls;
    dam_timings t;
    memset(&t, 0, sizeof t);
    t.struct_size = sizeof t;
    dam_status st = dam_session_timings((const dam_session *)(intptr_t)session, &t);
    if (st != DAM_STATUS_OK) {
        throw_last(env, st);
        return NULL;
    }
    jdouble v[6] = {t.n_prompt_tokens, t.n_generated_tokens, t.preprocess_ms, t.vision_ms,
                    t.prefill_ms, t.decode_ms};
    jdoubleArray a = (*env)->NewDoubleArray(env, 6);
    if (a) (*env)->SetDoubleArrayRegion(env, a, 0, 6, v);
    return a;
}

/* ------------------------------------------------------------------ describe inputs */

/* Memory one describe call owns; freed together. */
typedef struct {
    void **items;
    size_t n, cap;
} arena;

static void *arena_alloc(JNIEnv *env, arena *a, size_t bytes) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void **items = realloc(a->items, cap * sizeof *items);
        if (!items) {
            throw_dam(env, DAM_STATUS_INTERNAL, "out of memory");
            return NULL;
        }
        a->items = items;
        a->cap = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        throw_dam(env, DAM_STATUS_INTERNAL, "out of memory");
        return NULL;
    }
    a->items[a->n++] = p;
    return p;
}

static void arena_free(arena *a) {
    for (size_t i = 0; i < a->n; i++) free(a->items[i]);
    free(a->items);
}

static int bytes_per_pixel(jint format) {
    switch (format) {
    case DAM_PIXEL_FORMAT_RGB8: return 3;
    case DAM_PIXEL_FORMAT_RGBA8:
    case DAM_PIXEL_FORMAT_BGRA8: return 4;
    case DAM_PIXEL_FORMAT_GRAY8: return 1;
    default: return 0;
    }
}

/* Fills `view` from a pixel object (byte[], int[] or a direct ByteBuffer) and its dims
 * {width, height, stride_bytes, format}; arrays are copied into `a`. False with an exception
 * pending when the object or its size does not fit the dims. */
/* The classes a pixel object may have, looked up once per call. */
typedef struct {
    jclass bytes, ints, buffer;
} pixel_classes;

static bool read_image(JNIEnv *env, arena *a, const pixel_classes *pc, jobject pixels, const jint dims[4],
                       const char *what, dam_image_view *view) {
    char msg[160];
    jint w = dims[0], h = dims[1], stride = dims[2], format = dims[3];
    int bpp = bytes_per_pixel(format);
    if (!pixels || w <= 0 || h <= 0 || stride < 0 || !bpp) {
        snprintf(msg, sizeof msg, "%s: no pixels, or a size/stride/format out of range (%d x %d, stride %d, format %d)",
                 what, (int)w, (int)h, (int)stride, (int)format);
        throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, msg);
        return false;
    }
    /* What dam reads (dam.h, "Pointers"); jint factors cannot overflow 64 bits. */
    int64_t need = (int64_t)stride * (h - 1) + (int64_t)w * bpp;
    int64_t have;
    const uint8_t *data = NULL;
    bool is_bytes = (*env)->IsInstanceOf(env, pixels, pc->bytes);
    bool is_ints = (*env)->IsInstanceOf(env, pixels, pc->ints);
    if (is_bytes || is_ints) {
        jsize n = (*env)->GetArrayLength(env, (jarray)pixels);
        have = is_ints ? (int64_t)n * 4 : n;
    } else if ((*env)->IsInstanceOf(env, pixels, pc->buffer)) {
        data = (*env)->GetDirectBufferAddress(env, pixels);
        have = (*env)->GetDirectBufferCapacity(env, pixels);
        if (!data) {
            snprintf(msg, sizeof msg, "%s: the ByteBuffer is not direct (use ByteBuffer.allocateDirect)", what);
            throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, msg);
            return false;
        }
    } else {
        snprintf(msg, sizeof msg, "%s: pixels must be a ByteArray, an IntArray or a direct ByteBuffer", what);
        throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, msg);
        return false;
    }
    if (have < need) {
        snprintf(msg, sizeof msg, "%s: %d x %d pixels with stride %d need %lld bytes, the buffer has %lld",
                 what, (int)w, (int)h, (int)stride, (long long)need, (long long)have);
        throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, msg);
        return false;
    }
    if (!data) { /* copy the array's first `need` bytes */
        uint8_t *copy = arena_alloc(env, a, (size_t)(need + 3) / 4 * 4); /* whole ints */
        if (!copy) return false;
        if (is_ints)
            (*env)->GetIntArrayRegion(env, (jintArray)pixels, 0, (jsize)((need + 3) / 4), (jint *)copy);
        else
            (*env)->GetByteArrayRegion(env, (jbyteArray)pixels, 0, (jsize)need, (jbyte *)copy);
        data = copy;
    }
    view->data = data;
    view->width = (uint32_t)w;
    view->height = (uint32_t)h;
    view->stride_bytes = (size_t)stride;
    view->format = format;
    return true;
}

/* The describe arguments after the session and the mode. */
typedef struct {
    jobjectArray images;  /* pixel objects */
    jintArray image_dims; /* 4 per image */
    jintArray kinds;      /* per region: a dam_region_kind */
    jfloatArray coords;   /* 6 per region: normalized (0/1), brush_width, x0, y0, x1, y1 */
    jobjectArray points;  /* per region: FloatArray of x, y pairs, or null */
    jobjectArray labels;  /* per region: IntArray, or null */
    jobjectArray masks;   /* per region: pixel object, or null */
    jintArray mask_dims;  /* 4 per region */
} describe_args;

/* Copies element `i` of a primitive-array array (FloatArray / IntArray) into `a`; `*n` is its
 * length (0 for null). False with an exception pending. */
static bool read_elem(JNIEnv *env, arena *a, jobjectArray arr, jsize i, bool floats, void **out, jsize *n) {
    *out = NULL;
    *n = 0;
    jarray e = (jarray)(*env)->GetObjectArrayElement(env, arr, i);
    if ((*env)->ExceptionCheck(env)) return false;
    if (!e) return true;
    *n = (*env)->GetArrayLength(env, e);
    *out = arena_alloc(env, a, (size_t)*n * 4);
    if (*out) {
        if (floats) (*env)->GetFloatArrayRegion(env, (jfloatArray)e, 0, *n, (jfloat *)*out);
        else (*env)->GetIntArrayRegion(env, (jintArray)e, 0, *n, (jint *)*out);
    }
    (*env)->DeleteLocalRef(env, e);
    return *out != NULL;
}

/* Region `i` of `args` into `r`. False with an exception pending. */
static bool read_region(JNIEnv *env, arena *a, const pixel_classes *pc, const describe_args *args, jsize i,
                        dam_region *r) {
    jint kind, dims[4];
    jfloat f[6];
    (*env)->GetIntArrayRegion(env, args->kinds, i, 1, &kind);
    (*env)->GetFloatArrayRegion(env, args->coords, i * 6, 6, f);
    (*env)->GetIntArrayRegion(env, args->mask_dims, i * 4, 4, dims);
    if ((*env)->ExceptionCheck(env)) return false;
    memset(r, 0, sizeof *r);
    r->struct_size = sizeof *r;
    r->kind = kind;
    r->normalized = f[0] != 0;
    r->brush_width = f[1];
    r->x0 = f[2], r->y0 = f[3], r->x1 = f[4], r->y1 = f[5];
    void *pts, *labels;
    jsize n_pts, n_labels;
    if (!read_elem(env, a, args->points, i, true, &pts, &n_pts)) return false;
    if (!read_elem(env, a, args->labels, i, false, &labels, &n_labels)) return false;
    if (n_pts % 2 || (labels && n_labels != n_pts / 2)) {
        throw_dam(env, DAM_STATUS_INVALID_ARGUMENT,
                  "points must be x, y pairs, with one label per point");
        return false;
    }
    r->points = pts;
    r->n_points = (size_t)n_pts / 2;
    r->point_labels = labels;
    if (kind != DAM_REGION_KIND_MASK) return true;
    jobject m = (*env)->GetObjectArrayElement(env, args->masks, i);
    if ((*env)->ExceptionCheck(env)) return false;
    bool ok = read_image(env, a, pc, m, dims, "mask", &r->mask);
    (*env)->DeleteLocalRef(env, m);
    return ok;
}

/* optInts: max_new_tokens, length_kind, length_value, top_k, seed; optFloats: temperature,
 * top_p (NaN = unset). */
static bool read_options(JNIEnv *env, arena *a, jintArray ints, jfloatArray floats, jbyteArray query,
                         dam_describe_options *o) {
    jint i[5];
    jfloat f[2];
    *o = dam_describe_options_default();
    (*env)->GetIntArrayRegion(env, ints, 0, 5, i);
    (*env)->GetFloatArrayRegion(env, floats, 0, 2, f);
    if ((*env)->ExceptionCheck(env)) return false;
    if (i[0] != UNSET) {
        if (i[0] < 0) {
            throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, "maxNewTokens must not be negative");
            return false;
        }
        o->max_new_tokens = (uint32_t)i[0];
    }
    if (i[1] != UNSET) o->length_kind = i[1];
    if (i[2] != UNSET) o->length_value = (uint32_t)i[2];
    if (i[3] != UNSET) o->top_k = i[3];
    if (i[4] != UNSET) o->seed = (uint32_t)i[4];
    if (!isnan(f[0])) o->temperature = f[0];
    if (!isnan(f[1])) o->top_p = f[1];
    if (query) {
        jsize n = (*env)->GetArrayLength(env, query);
        char *q = arena_alloc(env, a, (size_t)n + 1); /* zeroed: NUL-terminated */
        if (!q) return false;
        (*env)->GetByteArrayRegion(env, query, 0, n, (jbyte *)q);
        o->query = q;
    }
    return true;
}

/* Checks the lengths of the describe arrays for `mode`; false with an exception pending. */
static bool check_shapes(JNIEnv *env, jint mode, const describe_args *d, jsize *n_images, jsize *n_regions) {
    if (!d->images || !d->image_dims || !d->kinds || !d->coords || !d->points || !d->labels || !d->masks ||
        !d->mask_dims) {
        throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, "describe: a null argument");
        return false;
    }
    jsize ni = (*env)->GetArrayLength(env, d->images), nr = (*env)->GetArrayLength(env, d->kinds);
    bool ok = ni >= 1 && nr >= 1 && (*env)->GetArrayLength(env, d->image_dims) == 4 * ni &&
              (*env)->GetArrayLength(env, d->coords) == 6 * nr && (*env)->GetArrayLength(env, d->points) == nr &&
              (*env)->GetArrayLength(env, d->labels) == nr && (*env)->GetArrayLength(env, d->masks) == nr &&
              (*env)->GetArrayLength(env, d->mask_dims) == 4 * nr;
    ok = ok && (mode == MODE_VIDEO ? ni == nr : ni == 1 && (mode == MODE_BATCH || nr == 1));
    if (!ok) throw_dam(env, DAM_STATUS_INVALID_ARGUMENT, "describe: images and regions do not match");
    *n_images = ni;
    *n_regions = nr;
    return ok;
}

/* The session's captions as an array of UTF-8 byte arrays, or NULL with an exception pending. */
static jobjectArray captions(JNIEnv *env, dam_session *s) {
    size_t n = dam_session_caption_count(s);
    jclass bytes = (*env)->FindClass(env, "[B");
    if (!bytes) return NULL;
    jobjectArray out = (*env)->NewObjectArray(env, (jsize)n, bytes, NULL);
    (*env)->DeleteLocalRef(env, bytes);
    for (size_t i = 0; out && i < n; i++) {
        size_t len = 0;
        dam_status st = dam_session_caption(s, i, NULL, 0, &len);
        char *text = st == DAM_STATUS_BUFFER_TOO_SMALL && len ? malloc(len) : NULL;
        if (!text) {
            throw_dam(env, st == DAM_STATUS_BUFFER_TOO_SMALL ? DAM_STATUS_INTERNAL : st, dam_last_error());
            return NULL;
        }
        st = dam_session_caption(s, i, text, len, &len);
        jbyteArray b = st == DAM_STATUS_OK ? bytes_of(env, text, len - 1) : NULL;
        free(text);
        if (st != DAM_STATUS_OK) throw_last(env, st);
        if (!b) return NULL;
        (*env)->SetObjectArrayElement(env, out, (jsize)i, b);
        (*env)->DeleteLocalRef(env, b);
    }
    return out;
}

/* Runs dam_describe / _video / _batch (mode) on prepared inputs; the status. */
static dam_status run_describe(dam_session *s, jint mode, const dam_image_view *images, const dam_region *regions,
                               size_t n, const dam_describe_options *o, call_ctx *ctx) {
    bool cb = ctx->sink != NULL;
    size_t len;
    switch (mode) {
    case MODE_SINGLE:
        return dam_describe(s, images, regions, o, cb ? on_token : NULL, ctx, NULL, 0, &len);
    case MODE_VIDEO:
        return dam_describe_video(s, images, regions, n, o, cb ? on_token : NULL, ctx, NULL, 0, &len);
    default:
        return dam_describe_batch(s, images, regions, n, o, cb ? on_batch_token : NULL, ctx);
    }
}

/* describe (mode 0), describeVideo (1), describeBatch (2): the captions (UTF-8), one per
 * region for a batch, else one. The caption goes to no buffer (dam returns
 * BUFFER_TOO_SMALL and keeps it); captions() copies it out. */
JNIEXPORT jobjectArray JNICALL Java_dev_dam_DamNative_describe(
    JNIEnv *env, jclass cls, jlong session, jint mode, jobjectArray images, jintArray image_dims,
    jintArray kinds, jfloatArray coords, jobjectArray points, jobjectArray labels, jobjectArray masks,
    jintArray mask_dims, jintArray opt_ints, jfloatArray opt_floats, jbyteArray query, jobject sink) {
    (void)cls;
    dam_session *s = (dam_session *)(intptr_t)session;
    describe_args d = {images, image_dims, kinds, coords, points, labels, masks, mask_dims};
    jsize ni, nr;
    if (!check_shapes(env, mode, &d, &ni, &nr)) return NULL;
    pixel_classes pc = {(*env)->FindClass(env, "[B"), (*env)->FindClass(env, "[I"),
                        (*env)->FindClass(env, "java/nio/ByteBuffer")};
    if (!pc.bytes || !pc.ints || !pc.buffer) return NULL;
    arena a = {0};
    dam_image_view *views = arena_alloc(env, &a, (size_t)ni * sizeof *views);
    dam_region *regions = views ? arena_alloc(env, &a, (size_t)nr * sizeof *regions) : NULL;
    dam_describe_options o;
    bool ok = regions && read_options(env, &a, opt_ints, opt_floats, query, &o);
    for (jsize i = 0; ok && i < ni; i++) {
        jint dims[4];
        (*env)->GetIntArrayRegion(env, image_dims, i * 4, 4, dims);
        jobject px = (*env)->GetObjectArrayElement(env, images, i);
        ok = !(*env)->ExceptionCheck(env) && read_image(env, &a, &pc, px, dims, "image", &views[i]);
        (*env)->DeleteLocalRef(env, px);
    }
    for (jsize i = 0; ok && i < nr; i++) ok = read_region(env, &a, &pc, &d, i, &regions[i]);
    call_ctx ctx;
    ok = ok && ctx_init(env, &ctx, sink, "onToken", "(I[B)Z", s);
    jobjectArray out = NULL;
    if (ok) {
        dam_status st = run_describe(s, mode, views, regions, (size_t)nr, &o, &ctx);
        if (ctx.error) (*env)->Throw(env, ctx.error);
        else if (st != DAM_STATUS_OK && st != DAM_STATUS_BUFFER_TOO_SMALL) throw_last(env, st);
        else out = captions(env, s);
    }
    arena_free(&a);
    return out;
}
