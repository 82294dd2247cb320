/*
 * describe.c - describe a region of an image with dam's C API.
 *
 *   describe [options] LLM.gguf VISION.gguf IMAGE.ppm REGION
 *
 *   REGION:  --mask MASK.pgm            (pixel > 0 = region, same size as the image)
 *            --box X0,Y0,X1,Y1          (pixels)
 *   options: --greedy                   (temperature 0: deterministic)
 *            --max-tokens N             (default 512)
 *            --query TEXT
 *            --threads N
 *            --stream                   (print pieces as they are generated)
 *            --timings                  (timings on stderr)
 *
 * Images are binary PPM (P6) and masks binary PGM (P5), 8 bits: C has no PNG decoder, and
 * `convert photo.png photo.ppm` (ImageMagick) or any image library makes them.
 *
 * Build (shared):  cc -std=c99 -Iinclude examples/c/describe.c -Ltarget/release -ldam -o describe
 * Build (static):  cc -std=c99 -Iinclude examples/c/describe.c target/release/libdam.a \
 *                     -lstdc++ -lgomp -lm -lpthread -ldl -o describe
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dam.h"

typedef struct {
    unsigned char *data;
    unsigned width, height, channels;
} pnm_image;

/* Reads one header integer of a PNM file, skipping whitespace and comments. */
static int pnm_int(FILE *f, unsigned *out) {
    int c = fgetc(f);
    for (;;) {
        while (c == ' ' || c == '\t' || c == '\r' || c == '\n') c = fgetc(f);
        if (c != '#') break;
        while (c != '\n' && c != EOF) c = fgetc(f);
    }
    if (c < '0' || c > '9') return 0;
    unsigned long v = 0;
    while (c >= '0' && c <= '9') {
        v = v * 10 + (unsigned long)(c - '0');
        if (v > 1000000ul) return 0;
        c = fgetc(f);
    }
    *out = (unsigned)v; /* the single whitespace byte after the number is consumed */
    return 1;
}

/* Loads a binary PPM (P6) or PGM (P5) with maxval 255. */
static int pnm_load(const char *path, pnm_image *img) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "describe: cannot open %s\n", path);
        return 0;
    }
    char magic[2] = {0, 0};
    unsigned maxval = 0;
    int ok = fread(magic, 1, 2, f) == 2 && magic[0] == 'P' && (magic[1] == '5' || magic[1] == '6') &&
             pnm_int(f, &img->width) && pnm_int(f, &img->height) && pnm_int(f, &maxval) &&
             maxval == 255 && img->width > 0 && img->height > 0;
    if (ok) {
        img->channels = magic[1] == '6' ? 3 : 1;
        size_t n = (size_t)img->width * img->height * img->channels;
        img->data = (unsigned char *)malloc(n);
        ok = img->data && fread(img->data, 1, n, f) == n;
    }
    fclose(f);
    if (!ok) fprintf(stderr, "describe: %s is not an 8-bit binary PPM/PGM\n", path);
    return ok;
}

static bool print_piece(const char *piece, size_t len, void *user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

static int usage(void) {
    fprintf(stderr,
            "usage: describe [--greedy] [--max-tokens N] [--query TEXT] [--threads N] [--stream]\n"
            "                [--timings] LLM.gguf VISION.gguf IMAGE.ppm (--mask MASK.pgm | --box X0,Y0,X1,Y1)\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *paths[3] = {NULL, NULL, NULL};
    int n_paths = 0, stream = 0, timings = 0, have_box = 0;
    const char *mask_path = NULL;
    float box[4] = {0, 0, 0, 0};
    dam_describe_options opts = dam_describe_options_default();
    dam_model_params mp = dam_model_params_default();

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--greedy")) {
            opts.temperature = 0.0f;
        } else if (!strcmp(a, "--stream")) {
            stream = 1;
        } else if (!strcmp(a, "--timings")) {
            timings = 1;
        } else if (!strcmp(a, "--max-tokens") && i + 1 < argc) {
            opts.max_new_tokens = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--query") && i + 1 < argc) {
            opts.query = argv[++i];
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            mp.n_threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--mask") && i + 1 < argc) {
            mask_path = argv[++i];
        } else if (!strcmp(a, "--box") && i + 1 < argc) {
            have_box = sscanf(argv[++i], "%f,%f,%f,%f", &box[0], &box[1], &box[2], &box[3]) == 4;
            if (!have_box) return usage();
        } else if (a[0] == '-' || n_paths == 3) {
            return usage();
        } else {
            paths[n_paths++] = a;
        }
    }
    if (n_paths != 3 || (mask_path == NULL) == (have_box == 0)) return usage();

    pnm_image image = {NULL, 0, 0, 0}, mask = {NULL, 0, 0, 0};
    int rc = 1;
    dam_model *model = NULL;
    dam_session *session = NULL;
    char *caption = NULL;
    dam_status st;
    dam_image_view view;
    dam_region region;
    size_t cap = 1024, len = 0;
    if (!pnm_load(paths[2], &image) || (mask_path && !pnm_load(mask_path, &mask))) goto done;

    st = dam_model_load(DAM_API_VERSION, paths[0], paths[1], &mp, &model);
    if (st != DAM_STATUS_OK) {
        fprintf(stderr, "describe: %s: %s\n", dam_status_string(st), dam_last_error());
        goto done;
    }
    st = dam_session_new(model, NULL, &session);
    if (st != DAM_STATUS_OK) {
        fprintf(stderr, "describe: %s: %s\n", dam_status_string(st), dam_last_error());
        goto done;
    }

    view.data = image.data;
    view.width = image.width;
    view.height = image.height;
    view.stride_bytes = (size_t)image.width * image.channels;
    view.format = image.channels == 3 ? DAM_PIXEL_FORMAT_RGB8 : DAM_PIXEL_FORMAT_GRAY8;

    memset(&region, 0, sizeof region);
    region.struct_size = sizeof region;
    if (mask_path) {
        region.kind = DAM_REGION_KIND_MASK;
        region.mask.data = mask.data;
        region.mask.width = mask.width;
        region.mask.height = mask.height;
        region.mask.stride_bytes = (size_t)mask.width * mask.channels;
        region.mask.format = mask.channels == 3 ? DAM_PIXEL_FORMAT_RGB8 : DAM_PIXEL_FORMAT_GRAY8;
    } else {
        region.kind = DAM_REGION_KIND_BOX;
        region.x0 = box[0];
        region.y0 = box[1];
        region.x1 = box[2];
        region.y1 = box[3];
    }

    /* A first guess at the size; if the caption is longer, it is fetched from the session
     * without generating it again. */
    caption = (char *)malloc(cap);
    if (!caption) goto done;
    st = dam_describe(session, &view, &region, &opts, stream ? print_piece : NULL, NULL, caption,
                      cap, &len);
    if (st == DAM_STATUS_BUFFER_TOO_SMALL) {
        char *bigger = (char *)realloc(caption, len);
        if (!bigger) goto done;
        caption = bigger;
        st = dam_session_last_caption(session, caption, len, &len);
    }
    if (st != DAM_STATUS_OK) {
        fprintf(stderr, "describe: %s: %s\n", dam_status_string(st), dam_last_error());
        goto done;
    }
    if (stream)
        printf("\n");
    else
        printf("%s\n", caption);

    if (timings) {
        dam_timings t;
        memset(&t, 0, sizeof t);
        t.struct_size = sizeof t;
        if (dam_session_timings(session, &t) == DAM_STATUS_OK)
            fprintf(stderr,
                    "preprocess %.1f ms, vision %.1f ms, prefill %.1f ms (%u tokens), decode %.1f ms "
                    "(%u tokens)\n",
                    t.preprocess_ms, t.vision_ms, t.prefill_ms, t.n_prompt_tokens, t.decode_ms,
                    t.n_generated_tokens);
    }
    rc = 0;

done:
    free(caption);
    dam_session_free(session);
    dam_model_free(model);
    free(image.data);
    free(mask.data);
    return rc;
}
