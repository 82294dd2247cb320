/*
 * dam.h - the C API of dam, an inference engine for NVIDIA's Describe Anything Model.
 *
 * Pure C99 (also valid C++). Link with libdam.so, or with libdam.a plus the system libraries
 * listed in include/ABI.md.
 *
 * ===================================================================================== CONTRACT
 *
 * Stability. Functions, struct fields and enum values are append-only: nothing is removed,
 * reordered or changes meaning while DAM_API_VERSION_MAJOR stays the same (include/ABI.md has
 * the rules and the changelog). Every parameter struct starts with `uint32_t struct_size`
 * (= sizeof the struct in the caller's header) and is passed by `const *`, so fields can be
 * appended. dam_model_load takes DAM_API_VERSION and refuses a library older than the header,
 * or of another major version, with DAM_STATUS_VERSION_MISMATCH. dam_image_view and dam_point
 * are frozen.
 *
 * Errors. Every fallible function returns a dam_status: DAM_STATUS_OK (0) or a negative error.
 * dam_last_error() gives a one-line message for the last failure on the calling thread. No
 * function aborts the process or lets an exception/panic escape: internal bugs are reported as
 * DAM_STATUS_INTERNAL. (Out-of-memory in a Rust allocation is the one exception: it aborts, as
 * in malloc-less C++ code.)
 *
 * Ownership. Objects are created by dam_model_load / dam_session_new into an out pointer and
 * owned by the caller, who frees them with dam_model_free / dam_session_free; both accept NULL.
 * A session keeps the weights of its model alive: a model may be freed before its sessions.
 * Inputs (paths, images, masks, regions, points, options, the query) are copied or read during
 * the call only (copy-in): nothing the caller passes is retained after a call returns.
 *
 * Returned pointers and their lifetimes.
 *   dam_version(), dam_status_string(), dam_backend_info(): static strings, valid for the
 *     whole process; never free them.
 *   dam_last_error(): thread-local; valid until the next failing dam call on the same thread
 *     (or the thread's exit); never free it.
 *   Strings passed to callbacks (token pieces, log lines): valid only during the callback.
 *   Captions are copied into caller buffers (out, out_cap, out_len): dam never returns memory
 *   that the caller must free.
 *
 * Threads.
 *   dam_model: immutable and shareable. dam_model_load, dam_session_new and
 *     dam_model_max_frames may run concurrently from any threads on the same model.
 *     dam_model_free must not race with other calls on that model.
 *   dam_session: one thread at a time (create one session per thread; they are cheap next to
 *     the model). dam_describe, dam_describe_video, dam_describe_batch,
 *     dam_session_last_caption, dam_session_caption_count, dam_session_caption and
 *     dam_session_timings on one session must not overlap; if they do, the later call returns
 *     DAM_STATUS_INVALID_ARGUMENT (dam_session_caption_count: 0) instead of corrupting state.
 *     dam_describe_batch decodes its regions on the calling thread (ggml's own worker threads
 *     aside); its callback is called there, for one region at a time. dam_session_cancel may
 *     be called from any thread at any time while the session is alive, also from a callback.
 *   dam_segmenter (1.4): shareable; dam_segment calls on one segmenter from several threads
 *     are serialised (it caches the last image's embedding); dam_segmenter_free must not
 *     race with other calls on it. A model's own segmenter (dam_device_params.segmenter_path)
 *     is shared by its sessions the same way.
 *   Version, info, default-params and dam_last_error functions: any thread.
 *   Callbacks run on the thread that made the dam call; they must not throw (C++), longjmp,
 *   or free the object they are called for.
 *
 * Names. Types and functions are lower snake case with the prefix dam_, constants upper case
 * with DAM_. A struct's defaults come from dam_<struct>_default() when it is returned by value
 * (frozen size) and from dam_<struct>_init(ptr, size) when it may grow. Older names stay as
 * aliases (dam_model_default_params, dam_session_default_params, DamBatchTokenCallback).
 *
 * Pointers. A pointer documented as "may be NULL" may be NULL; every other pointer argument
 * is checked, and NULL gives DAM_STATUS_INVALID_ARGUMENT. Non-NULL pointers must be valid for
 * the documented size (an image: stride_bytes * (height - 1) + width * bytes_per_pixel bytes;
 * a struct: its struct_size) and unchanged during the call.
 *
 * Logging. Quiet by default: nothing is printed unless a log callback is set in
 * dam_model_params. llama.cpp's log is process-global; dam routes its lines to the callback of
 * the model whose call (load, session creation, describe) runs on the thread that logs them.
 * Lines that llama.cpp logs from its own worker threads, or outside any dam call, are dropped.
 *
 * Minimal use:
 *
 *   dam_model *model = NULL;
 *   dam_model_params mp = dam_model_params_default();
 *   if (dam_model_load(DAM_API_VERSION, "m-llm-f16.gguf", "m-vision-f16.gguf", &mp, &model))
 *       fprintf(stderr, "%s\n", dam_last_error());
 *   dam_session *s = NULL;
 *   dam_session_new(model, NULL, &s);
 *   dam_image_view img = {rgb, w, h, (size_t)w * 3, DAM_PIXEL_FORMAT_RGB8};
 *   dam_region r = {0};
 *   r.struct_size = sizeof r; r.kind = DAM_REGION_KIND_BOX;
 *   r.x0 = 10; r.y0 = 20; r.x1 = 200; r.y1 = 180;
 *   char text[4096]; size_t len = 0;
 *   dam_status st = dam_describe(s, &img, &r, NULL, NULL, NULL, text, sizeof text, &len);
 *   dam_session_free(s);
 *   dam_model_free(model);
 */

#ifndef DAM_H
#define DAM_H

/* This file is generated by cbindgen from src/capi/ (build.rs); do not edit it by hand.
 * To update it after changing src/capi/: DAM_BLESS=1 cargo build --release */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
/* DAM_API marks every function of the library. Define DAM_STATIC when linking libdam.a on
 * Windows (no dllimport); define DAM_API yourself to override both. */
#ifndef DAM_API
#  if defined(_WIN32) || defined(__CYGWIN__)
#    if defined(DAM_BUILD)
#      define DAM_API __declspec(dllexport)
#    elif defined(DAM_STATIC)
#      define DAM_API
#    else
#      define DAM_API __declspec(dllimport)
#    endif
#  elif defined(__GNUC__) || defined(__clang__)
#    define DAM_API __attribute__((visibility("default")))
#  else
#    define DAM_API
#  endif
#endif

/**
 * Major version of the C API. Changes only when an existing function,
 * struct field or enum value changes meaning or is removed (never so far).
 */
#define DAM_API_VERSION_MAJOR 1

/**
 * Minor version of the C API. Grows when functions, struct fields (at the
 * end of a struct) or enum values are appended.
 */
#define DAM_API_VERSION_MINOR 5

/**
 * The API version this header describes: `(MAJOR << 16) | MINOR`. Pass it
 * to `dam_model_load`.
 */
#define DAM_API_VERSION ((DAM_API_VERSION_MAJOR << 16) | DAM_API_VERSION_MINOR)

/**
 * Stages reported to the load-progress callback, in this order.
 */
enum dam_load_stage
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * Before anything is read (progress 0).
     */
    DAM_LOAD_STAGE_START = 0,
    /**
     * The vision file is mapped and validated.
     */
    DAM_LOAD_STAGE_VISION_LOADED = 1,
    /**
     * llama.cpp has loaded the LLM file.
     */
    DAM_LOAD_STAGE_LLM_LOADED = 2,
    /**
     * The model is complete (progress 1).
     */
    DAM_LOAD_STAGE_DONE = 3,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_load_stage dam_load_stage;
#else
typedef int32_t dam_load_stage;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Severity of a log line.
 */
enum dam_log_level
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    DAM_LOG_LEVEL_DEBUG = 0,
    DAM_LOG_LEVEL_INFO = 1,
    DAM_LOG_LEVEL_WARN = 2,
    DAM_LOG_LEVEL_ERROR = 3,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_log_level dam_log_level;
#else
typedef int32_t dam_log_level;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * The result of every fallible call: 0 on success, negative on error. The
 * message of the last error on the calling thread is `dam_last_error()`.
 */
enum dam_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * Success.
     */
    DAM_STATUS_OK = 0,
    /**
     * A NULL pointer, a wrong `struct_size`, an out-of-range option, a bad
     * image (size, stride, format), a session used by two calls at once.
     */
    DAM_STATUS_INVALID_ARGUMENT = -1,
    /**
     * The region is empty, outside the image, of another size than the
     * image, or malformed.
     */
    DAM_STATUS_INVALID_REGION = -2,
    /**
     * A region kind the engine cannot handle yet (`DAM_REGION_KIND_POINTS`).
     */
    DAM_STATUS_UNSUPPORTED_REGION = -3,
    /**
     * A model file is malformed, truncated, or the two files do not match.
     */
    DAM_STATUS_INVALID_MODEL = -4,
    /**
     * A file cannot be opened or read.
     */
    DAM_STATUS_IO = -5,
    /**
     * The prompt and the caption do not fit into the context window.
     */
    DAM_STATUS_CONTEXT_OVERFLOW = -6,
    /**
     * `dam_session_cancel()` was called, or a load-progress callback
     * returned false.
     */
    DAM_STATUS_CANCELLED = -7,
    /**
     * ggml / llama.cpp failed (out of memory in a compute buffer, ...).
     */
    DAM_STATUS_BACKEND = -8,
    /**
     * The caller was compiled against an incompatible `dam.h`.
     */
    DAM_STATUS_VERSION_MISMATCH = -9,
    /**
     * The output buffer is NULL or too small; `*out_len` holds the size
     * needed, terminating NUL included.
     */
    DAM_STATUS_BUFFER_TOO_SMALL = -10,
    /**
     * A bug in dam (an internal panic was caught at the boundary).
     */
    DAM_STATUS_INTERNAL = -11,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_status dam_status;
#else
typedef int32_t dam_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Pixel layouts of a `dam_image_view` (its `format` field).
 */
enum dam_pixel_format
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * R, G, B: 3 bytes per pixel.
     */
    DAM_PIXEL_FORMAT_RGB8 = 0,
    /**
     * R, G, B, A: 4 bytes per pixel.
     */
    DAM_PIXEL_FORMAT_RGBA8 = 1,
    /**
     * B, G, R, A: 4 bytes per pixel (little-endian ARGB32 of UI toolkits).
     */
    DAM_PIXEL_FORMAT_BGRA8 = 2,
    /**
     * One byte of luminance per pixel.
     */
    DAM_PIXEL_FORMAT_GRAY8 = 3,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_pixel_format dam_pixel_format;
#else
typedef int32_t dam_pixel_format;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Kinds of `dam_region` (its `kind` field).
 */
enum dam_region_kind
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * `mask`: a view of the image's size; a pixel is in the region when its
     * gray value, or any of its R, G, B values, is > 0.
     */
    DAM_REGION_KIND_MASK = 0,
    /**
     * The image's own alpha channel (alpha > 0); the image must be RGBA8 or
     * BGRA8.
     */
    DAM_REGION_KIND_ALPHA = 1,
    /**
     * The box `x0, y0, x1, y1`: every pixel whose centre lies in
     * `[x0, x1) x [y0, y1)`; pixels, or fractions with `normalized`.
     */
    DAM_REGION_KIND_BOX = 2,
    /**
     * The polyline through `points[0 .. n_points]` drawn with a round brush
     * of diameter `brush_width` pixels; `normalized` applies to the points.
     */
    DAM_REGION_KIND_SCRIBBLE = 3,
    /**
     * Clicks `points` in image pixels (labels in `point_labels`), made a
     * mask by the model's segmenter (`dam_device_params.segmenter_path`);
     * without one `DAM_STATUS_UNSUPPORTED_REGION` (before 1.4 always).
     */
    DAM_REGION_KIND_POINTS = 4,
    /**
     * The box `x0, y0, x1, y1` in image pixels given to the segmenter,
     * whose mask is the region (an opt-in alternative to BOX's filled
     * rectangle); needs a segmenter like POINTS. Since API 1.4.
     */
    DAM_REGION_KIND_SEGMENTED_BOX = 5,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_region_kind dam_region_kind;
#else
typedef int32_t dam_region_kind;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Length instructions the model was trained with (`length_kind` of
 * `dam_describe_options`); `length_value` is N.
 */
enum dam_length
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * No length instruction.
     */
    DAM_LENGTH_NONE = 0,
    /**
     * " in N words".
     */
    DAM_LENGTH_WORDS = 1,
    /**
     * " in about N words".
     */
    DAM_LENGTH_ABOUT_WORDS = 2,
    /**
     * " in more than N words".
     */
    DAM_LENGTH_MORE_THAN_WORDS = 3,
    /**
     * " in N sentences".
     */
    DAM_LENGTH_SENTENCES = 4,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_length dam_length;
#else
typedef int32_t dam_length;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * KV-cache precision (`kv_type` of `dam_model_params`).
 */
enum dam_kv_type
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * f16, like llama.cpp (default).
     */
    DAM_KV_TYPE_F16 = 0,
    /**
     * f32: bit-faithful comparisons with the reference.
     */
    DAM_KV_TYPE_F32 = 1,
    /**
     * q8_0: about half the memory of f16; needs flash attention
     * (`DAM_FLASH_ATTN_AUTO` means on, `DAM_FLASH_ATTN_OFF` is refused).
     * Since API 1.5.
     */
    DAM_KV_TYPE_Q8_0 = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_kv_type dam_kv_type;
#else
typedef int32_t dam_kv_type;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Flash-attention policy (`flash_attn` of `dam_model_params`).
 */
enum dam_flash_attn
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * llama.cpp decides (default).
     */
    DAM_FLASH_ATTN_AUTO = 0,
    DAM_FLASH_ATTN_ON = 1,
    DAM_FLASH_ATTN_OFF = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_flash_attn dam_flash_attn;
#else
typedef int32_t dam_flash_attn;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Where the vision stage runs (`vision_device` of `dam_device_params`).
 * Since API 1.2.
 */
enum dam_vision_device
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
    /**
     * On the main GPU when ggml has one (weights uploaded once at load),
     * else on the CPU (default).
     */
    DAM_VISION_DEVICE_GPU = 0,
    /**
     * On the CPU, weights read in place from the mapping.
     */
    DAM_VISION_DEVICE_CPU = 1,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum dam_vision_device dam_vision_device;
#else
typedef int32_t dam_vision_device;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * A loaded model: both GGUF files, memory-mapped and immutable. Shareable:
 * any number of threads may use one model at once.
 */
typedef struct dam_model dam_model;

/**
 * A loaded segmenter (a `dam-segmenter` GGUF file) and the image embedding
 * of the last image it segmented. Any thread; calls on one segmenter are
 * serialised.
 */
typedef struct dam_segmenter dam_segmenter;

/**
 * The state of one conversation with a model: KV cache, compute buffers,
 * the last caption and timings. One thread at a time (except
 * `dam_session_cancel`).
 */
typedef struct dam_session dam_session;

/**
 * What to generate. Get one from `dam_describe_options_default()`.
 */
typedef struct dam_describe_options {
    /**
     * `sizeof(dam_describe_options)`.
     */
    uint32_t struct_size;
    /**
     * Maximum new tokens (default 512, at least 1).
     */
    uint32_t max_new_tokens;
    /**
     * The question, UTF-8, without `<image>`; NULL = the model's default
     * ("Describe the masked region in detail." for the released models).
     * Copied during the call.
     */
    const char *query;
    /**
     * A `dam_length` (default `DAM_LENGTH_NONE`).
     */
    int32_t length_kind;
    /**
     * N of the length instruction (at least 1 when `length_kind` is set).
     */
    uint32_t length_value;
    /**
     * Sampling temperature; 0 = greedy (deterministic). Default 0.2.
     */
    float temperature;
    /**
     * Nucleus sampling, 0 < top_p <= 1. Default 0.5.
     */
    float top_p;
    /**
     * Top-k sampling (<= 0: off). Default 50.
     */
    int32_t top_k;
    /**
     * Sampling seed. Default 0.
     */
    uint32_t seed;
} dam_describe_options;

/**
 * Load progress: `stage`, `progress` in [0, 1]. Return false to abort the
 * load (`dam_model_load` then returns `DAM_STATUS_CANCELLED`). Called on the
 * thread that called `dam_model_load`; must not throw or longjmp.
 */
typedef bool (*dam_progress_callback)(dam_load_stage stage, float progress, void *user_data);

/**
 * One log line (`text`, NUL-terminated, usually ending in a newline, valid
 * only during the call). Called on the thread of the dam call that caused
 * the line (load, session creation, describe); when one model is used from
 * several threads it may be called concurrently. Must not throw or longjmp.
 */
typedef void (*dam_log_callback)(dam_log_level level, const char *text, void *user_data);

/**
 * How to load a model. Get one from `dam_model_params_default()` and
 * change fields; `struct_size` must stay `sizeof(dam_model_params)`.
 * Frozen at its 1.1 size (64 bytes on 64-bit targets): it is returned by
 * value, and a larger struct would be written past an older program's.
 * Later model settings go into `dam_device_params`.
 */
typedef struct dam_model_params {
    /**
     * `sizeof(dam_model_params)` (set by `dam_model_params_default`).
     */
    uint32_t struct_size;
    /**
     * CPU threads for the vision graph and the LLM, 0 ..= 512; 0 = all cores.
     */
    int32_t n_threads;
    /**
     * Context length in tokens; 0 = a session's context is made at its
     * first call for what it needs (a multiple of 256; before 1.5, 1024 at
     * `dam_session_new`) and grows to min(the LLM's training length, 4096)
     * when a call needs more.
     */
    uint32_t n_ctx;
    /**
     * A `dam_kv_type` (default `DAM_KV_TYPE_F16`).
     */
    int32_t kv_type;
    /**
     * A `dam_flash_attn` (default `DAM_FLASH_ATTN_AUTO`).
     */
    int32_t flash_attn;
    /**
     * LLM layers to offload to the GPU: negative = all (default since API
     * 1.2; it was 0), 0 = none. Ignored without a GPU.
     */
    int32_t n_gpu_layers;
    /**
     * Load progress (NULL = none).
     */
    dam_progress_callback progress_callback;
    void *progress_user_data;
    /**
     * Log lines of this model (NULL = quiet, the default).
     */
    dam_log_callback log_callback;
    void *log_user_data;
    /**
     * The least severe `dam_log_level` delivered (default `DAM_LOG_LEVEL_WARN`).
     */
    int32_t log_level;
    /**
     * Regions `dam_describe_batch` decodes in parallel (LLM sequences
     * sharing the `n_ctx` cells), 1 ..= 64; 0 = the default, 4.
     * Since API 1.1.
     */
    uint32_t n_seq_max;
} dam_model_params;

/**
 * Where a model runs, for `dam_model_load_on`. Fill it with
 * `dam_device_params_init` (it grows by appended fields; unlike
 * `dam_model_params` it is never returned by value). Since API 1.2.
 */
typedef struct dam_device_params {
    /**
     * `sizeof(dam_device_params)` (set by `dam_device_params_init`).
     */
    uint32_t struct_size;
    /**
     * The GPU to use: its index among the GPUs `dam_backend_info` lists
     * (default 0). Ignored when there is no GPU.
     */
    int32_t main_gpu;
    /**
     * A `dam_vision_device` (default `DAM_VISION_DEVICE_GPU`).
     */
    int32_t vision_device;
    /**
     * 1 (default): copy the CPU's weight matrices that ggml multiplies
     * faster in another layout (AMX tiles, repacked GEMM blocks) into it at
     * load; 0: keep every weight in the mapped file (less memory).
     */
    int32_t repack;
    /**
     * A `dam-segmenter` GGUF file to load with the model (NULL = none,
     * the default): POINTS and SEGMENTED_BOX regions become its masks
     * (on the CPU, `n_threads` threads). Since API 1.4.
     */
    const char *segmenter_path;
} dam_device_params;

/**
 * A borrowed image: `height` rows of `width` pixels; row `y` starts at byte
 * `y * stride_bytes` of `data`, and the last row needs only
 * `width * bytes_per_pixel` bytes. Read during the call only (copy-in).
 * This struct is frozen: it will never grow.
 */
typedef struct dam_image_view {
    const uint8_t *data;
    /**
     * 1 ..= 16384.
     */
    uint32_t width;
    /**
     * 1 ..= 16384.
     */
    uint32_t height;
    /**
     * Bytes from one row to the next, at least `width * bytes_per_pixel`.
     */
    size_t stride_bytes;
    /**
     * A `dam_pixel_format`.
     */
    int32_t format;
} dam_image_view;

/**
 * A point of a scribble or a click, in pixels (or fractions with
 * `normalized`). Frozen.
 */
typedef struct dam_point {
    float x;
    float y;
} dam_point;

/**
 * Which part of the image to describe. Zero it, set `struct_size` to
 * `sizeof(dam_region)` and `kind`, then the fields of that kind. Read
 * during the call only (copy-in).
 */
typedef struct dam_region {
    /**
     * `sizeof(dam_region)`.
     */
    uint32_t struct_size;
    /**
     * A `dam_region_kind`.
     */
    int32_t kind;
    /**
     * BOX, SCRIBBLE: nonzero = coordinates are fractions of width/height
     * (POINTS and SEGMENTED_BOX take pixels: nonzero is refused).
     */
    int32_t normalized;
    /**
     * SCRIBBLE: brush diameter in image pixels (> 0).
     */
    float brush_width;
    /**
     * BOX, SEGMENTED_BOX: corners (x0 <= x1, y0 <= y1).
     */
    float x0;
    float y0;
    float x1;
    float y1;
    /**
     * MASK: the mask, of the image's size, any pixel format.
     */
    struct dam_image_view mask;
    /**
     * SCRIBBLE, POINTS: `n_points` points.
     */
    const struct dam_point *points;
    size_t n_points;
    /**
     * POINTS: `n_points` labels (1 = positive, 0 = negative, anything
     * else refused); NULL = all positive.
     */
    const int32_t *point_labels;
} dam_region;

/**
 * How to create a session. Get one from `dam_session_params_default()`.
 */
typedef struct dam_session_params {
    /**
     * `sizeof(dam_session_params)`.
     */
    uint32_t struct_size;
    /**
     * CPU threads of this session, 0 ..= 512; 0 = the model's `n_threads`.
     */
    int32_t n_threads;
} dam_session_params;

/**
 * Receives each complete UTF-8 piece of a caption as it is generated:
 * `piece` is NUL-terminated and `len` bytes long (NUL excluded); it is valid
 * only during the call. Return true to go on, false to stop generation (the
 * call then succeeds with the caption so far). Called on the thread that
 * called `dam_describe*`. It must not throw, longjmp, or call `dam_describe*`
 * / `dam_session_last_caption` / `dam_session_timings` on the same session
 * (those return `DAM_STATUS_INVALID_ARGUMENT`); `dam_session_cancel` is fine.
 */
typedef bool (*dam_token_callback)(const char *piece, size_t len, void *user_data);

/**
 * As `dam_token_callback`, for `dam_describe_batch`: `region` is the index
 * of the region whose caption the piece belongs to. Returning false stops
 * that region's caption only. Same rules as `dam_token_callback`. Since
 * API 1.1 (named `DamBatchTokenCallback` until 1.3).
 */
typedef bool (*dam_batch_token_callback)(size_t region,
                                         const char *piece,
                                         size_t len,
                                         void *user_data);

/**
 * Timings of the last successful describe call of a session. Set
 * `struct_size` to `sizeof(dam_timings)` before calling
 * `dam_session_timings`; on return it holds the number of bytes filled.
 */
typedef struct dam_timings {
    uint32_t struct_size;
    /**
     * Input tokens of the prompt (visual tokens included).
     */
    uint32_t n_prompt_tokens;
    /**
     * Generated tokens.
     */
    uint32_t n_generated_tokens;
    /**
     * Region rasterisation, resizing, normalisation.
     */
    double preprocess_ms;
    /**
     * Vision encoder, context provider, projector.
     */
    double vision_ms;
    /**
     * LLM prompt prefill.
     */
    double prefill_ms;
    /**
     * Token-by-token generation.
     */
    double decode_ms;
} dam_timings;

/**
 * The 1.1 name of `dam_batch_token_callback`, kept so that programs
 * written against it still compile; prefer `dam_batch_token_callback`.
 */
typedef dam_batch_token_callback DamBatchTokenCallback;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The library's version, e.g. "0.1.0". Static string; never NULL. Any thread.
 */
DAM_API const char *dam_version(void);

/**
 * The C API version the library implements, `(MAJOR << 16) | MINOR`
 * (compare with `DAM_API_VERSION`). Any thread.
 */
DAM_API uint32_t dam_api_version(void);

/**
 * A short static name of a status, e.g. "DAM_STATUS_INVALID_REGION" ("unknown
 * status" for other values). Never NULL; valid for the whole process. Any
 * thread.
 */
DAM_API const char *dam_status_string(int32_t status);

/**
 * The message of the last failed call on the calling thread ("" if none).
 * Never NULL. Valid until the next failing dam call on this thread or the
 * thread's exit; successful calls leave it unchanged. Any thread (each has
 * its own).
 */
DAM_API const char *dam_last_error(void);

/**
 * A JSON object describing the build and the machine: library and API
 * versions, compute backends/devices, default thread count, CPU SIMD
 * features, llama.cpp's system info. Built on the first call; the string is
 * static (valid for the whole process). Never NULL. Any thread.
 */
DAM_API const char *dam_backend_info(void);

/**
 * Default describe options: the reference's sampling (temperature 0.2,
 * top-p 0.5, top-k 50, seed 0), 512 tokens, the model's query. Set
 * `temperature = 0` for greedy, deterministic captions. Any thread.
 */
DAM_API struct dam_describe_options dam_describe_options_default(void);

/**
 * Default model parameters (all cores, f16 KV cache, no callbacks: quiet).
 * Any thread. Since API 1.3; the same as `dam_model_default_params`.
 */
DAM_API struct dam_model_params dam_model_params_default(void);

/**
 * The 1.0 name of `dam_model_params_default` (same function); kept for
 * programs that use it.
 */
DAM_API struct dam_model_params dam_model_default_params(void);

/**
 * Writes the default device parameters (main GPU 0, vision on the GPU)
 * into `*params`, `size` bytes of it: pass `sizeof(dam_device_params)`.
 * `DAM_STATUS_INVALID_ARGUMENT` for NULL or a `size` below the 1.2 struct,
 * `DAM_STATUS_VERSION_MISMATCH` for one above this library's. Any thread.
 * Since API 1.2.
 */
DAM_API dam_status dam_device_params_init(struct dam_device_params *params, size_t size);

/**
 * Loads a model from its two GGUF files (`*-llm-*.gguf`, `*-vision-*.gguf`),
 * memory-mapped. Pass `DAM_API_VERSION` as `api_version`: a library that
 * cannot serve that header returns `DAM_STATUS_VERSION_MISMATCH`. `params`
 * may be NULL (defaults). On success `*out_model` is a new model owned by
 * the caller (free it with `dam_model_free`); on failure it is set to NULL
 * (when `out_model` is not NULL). Any thread; several loads may run at once.
 */
DAM_API
dam_status dam_model_load(uint32_t api_version,
                          const char *llm_path,
                          const char *vision_path,
                          const struct dam_model_params *params,
                          struct dam_model **out_model);

/**
 * `dam_model_load` with device choices: `device` may be NULL (the
 * defaults of `dam_device_params_init`). Without a GPU the model runs on
 * the CPU (an info log line says so); a `main_gpu` beyond the GPUs found
 * is `DAM_STATUS_INVALID_ARGUMENT`. Since API 1.2.
 */
DAM_API
dam_status dam_model_load_on(uint32_t api_version,
                             const char *llm_path,
                             const char *vision_path,
                             const struct dam_model_params *params,
                             const struct dam_device_params *device,
                             struct dam_model **out_model);

/**
 * Frees a model; NULL is a no-op. Sessions created from it stay usable
 * (they keep the weights alive until they are freed). No other call may use
 * this `model` pointer concurrently or afterwards.
 */
DAM_API void dam_model_free(struct dam_model *model);

/**
 * The most frames `dam_describe_video` takes with this model (8 for the
 * released models); 0 when `model` is NULL. Any thread.
 */
DAM_API uint32_t dam_model_max_frames(const struct dam_model *model);

/**
 * Loads a `dam-segmenter` GGUF file (every key, shape and type is checked
 * before use; a file of another architecture or a truncated one is
 * `DAM_STATUS_INVALID_MODEL`). `n_threads`: CPU threads, 0 = all cores.
 * On success `*out_segmenter` is owned by the caller (free it with
 * `dam_segmenter_free`), else NULL. Any thread. Since API 1.4.
 */
DAM_API
dam_status dam_segmenter_load(uint32_t api_version,
                              const char *path,
                              int32_t n_threads,
                              struct dam_segmenter **out_segmenter);

/**
 * Frees a segmenter; NULL is a no-op. No other call may use it
 * concurrently or afterwards. Since API 1.4.
 */
DAM_API void dam_segmenter_free(struct dam_segmenter *segmenter);

/**
 * Segments `image` with `region` (kind `DAM_REGION_KIND_POINTS` or
 * `DAM_REGION_KIND_SEGMENTED_BOX`, pixels): writes the selected mask
 * (the candidate with the highest predicted IoU), width * height bytes
 * row-major, 1 = inside, 0 = outside, into `mask` (`mask_size` >= width *
 * height, else `DAM_STATUS_BUFFER_TOO_SMALL` before any work).
 * `multimask`: 1 = three candidates (SAM's multimask output, what the
 * reference uses), 0 = one. The candidates' predicted IoU go to `scores`
 * (NULL = not wanted; fewer than `*out_n_scores` slots =
 * `DAM_STATUS_BUFFER_TOO_SMALL` after the mask is written); `out_n_scores`
 * and `out_best` (index of the selected candidate) may be NULL. A second
 * call on the same image (same size, format and bytes) reuses its
 * embedding and runs only the mask decoder. Clicks outside the image, NaN,
 * no points, labels other than 0/1 and degenerate boxes are
 * `DAM_STATUS_INVALID_ARGUMENT`. Since API 1.4.
 */
DAM_API
dam_status dam_segment(struct dam_segmenter *segmenter,
                       const struct dam_image_view *image,
                       const struct dam_region *region,
                       int32_t multimask,
                       uint8_t *mask,
                       size_t mask_size,
                       float *scores,
                       size_t scores_cap,
                       size_t *out_n_scores,
                       int32_t *out_best);

/**
 * Default session parameters. Any thread. Since API 1.3; the same as
 * `dam_session_default_params`.
 */
DAM_API struct dam_session_params dam_session_params_default(void);

/**
 * The 1.0 name of `dam_session_params_default` (same function); kept for
 * programs that use it.
 */
DAM_API struct dam_session_params dam_session_default_params(void);

/**
 * Creates a session (KV cache, compute buffers) on `model`; `params` may be
 * NULL (defaults). On success `*out_session` is owned by the caller (free
 * it with `dam_session_free`); on failure it is NULL. Any thread, also
 * concurrently on the same model.
 */
DAM_API
dam_status dam_session_new(const struct dam_model *model,
                           const struct dam_session_params *params,
                           struct dam_session **out_session);

/**
 * Frees a session; NULL is a no-op. No other call (`dam_session_cancel`
 * included) may use this pointer concurrently or afterwards.
 */
DAM_API void dam_session_free(struct dam_session *session);

/**
 * Cancels the session's running describe call (it returns
 * `DAM_STATUS_CANCELLED` within one graph computation or one token), or,
 * when none runs, the next one. Any thread, at any time while the session
 * is alive (also from a token callback); never blocks.
 */
DAM_API dam_status dam_session_cancel(const struct dam_session *session);

/**
 * Describes `region` of `image`. `options` may be NULL (defaults);
 * `on_token` may be NULL. The caption (UTF-8, NUL-terminated) is written to
 * `out` when it fits in `out_cap` bytes; `*out_len` (when `out_len` is not
 * NULL) is set to its size including the NUL. When `out` is NULL or too
 * small the call still generates the caption, keeps it in the session and
 * returns `DAM_STATUS_BUFFER_TOO_SMALL`: fetch it with
 * `dam_session_last_caption` without generating again. Returning false from
 * `on_token` ends generation early with `DAM_STATUS_OK`. The session is used
 * by one thread at a time; a second concurrent call on the same session
 * returns `DAM_STATUS_INVALID_ARGUMENT`.
 */
DAM_API
dam_status dam_describe(struct dam_session *session,
                        const struct dam_image_view *image,
                        const struct dam_region *region,
                        const struct dam_describe_options *options,
                        dam_token_callback on_token,
                        void *user_data,
                        char *out,
                        size_t out_cap,
                        size_t *out_len);

/**
 * Describes the region followed through `n_frames` frames of a video
 * (`images[k]` with `regions[k]`; 1 <= n_frames <= `dam_model_max_frames`).
 * All regions must have the same `struct_size` (the array's element size
 * is `regions[0].struct_size`). Frames whose region is empty are dropped (a
 * warning is logged); if all are, `DAM_STATUS_INVALID_REGION`. Output,
 * callback and threading rules as `dam_describe`.
 */
DAM_API
dam_status dam_describe_video(struct dam_session *session,
                              const struct dam_image_view *images,
                              const struct dam_region *regions,
                              size_t n_frames,
                              const struct dam_describe_options *options,
                              dam_token_callback on_token,
                              void *user_data,
                              char *out,
                              size_t out_cap,
                              size_t *out_len);

/**
 * Describes `n_regions` regions of one image in one call (1 <= n_regions
 * <= 64): the vision stage runs batched and the captions decode in
 * parallel (up to the model's `n_seq_max` at once; more run in waves).
 * Each caption equals what `dam_describe` gives for that region alone.
 * All regions must have the same `struct_size` (the array's element size
 * is `regions[0].struct_size`); any invalid region fails the whole call
 * (the message names it). Read the captions with `dam_session_caption`
 * (index = region). `on_token` (may be NULL) receives each piece with its
 * region's index; returning false stops that region's caption only.
 * `dam_session_timings` then gives the whole call's times and token
 * counts. Threading rules as `dam_describe`. Since API 1.1.
 */
DAM_API
dam_status dam_describe_batch(struct dam_session *session,
                              const struct dam_image_view *image,
                              const struct dam_region *regions,
                              size_t n_regions,
                              const struct dam_describe_options *options,
                              dam_batch_token_callback on_token,
                              void *user_data);

/**
 * The number of captions the session's last successful describe call made
 * (1 for `dam_describe*`, `n_regions` for `dam_describe_batch`; 0 before
 * one, after a failed one, and for NULL). Same thread rule as
 * `dam_describe`. Since API 1.1.
 */
DAM_API size_t dam_session_caption_count(const struct dam_session *session);

/**
 * Copies caption `index` of the session's last successful describe call
 * (0 for `dam_describe*`; the region's index for `dam_describe_batch`) into
 * `out`, with the size-query rules of `dam_describe`. An index at or past
 * `dam_session_caption_count` is `DAM_STATUS_INVALID_ARGUMENT`. Same thread
 * rule as `dam_describe`. Since API 1.1.
 */
DAM_API
dam_status dam_session_caption(const struct dam_session *session,
                               size_t index,
                               char *out,
                               size_t out_cap,
                               size_t *out_len);

/**
 * Copies the caption of the session's last successful describe call into
 * `out` with the same size-query rules as `dam_describe` (`*out_len` =
 * size with the NUL; `DAM_STATUS_BUFFER_TOO_SMALL` when `out` is NULL or
 * too small). "" before any call and after a failed one. Same thread rule
 * as `dam_describe`.
 */
DAM_API
dam_status dam_session_last_caption(const struct dam_session *session,
                                    char *out,
                                    size_t out_cap,
                                    size_t *out_len);

/**
 * Fills `*out` with the timings of the session's last successful describe
 * call (zeros before one and after a failed one). Set `out->struct_size`
 * first. Same thread rule as `dam_describe`.
 */
DAM_API dam_status dam_session_timings(const struct dam_session *session, struct dam_timings *out);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* DAM_H */
