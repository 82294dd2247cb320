// The 1.4 segmenter calls from C++: dam_segmenter_load / dam_segment / the
// model's segmenter (dam_device_params.segmenter_path) through dam.hpp, and
// their error paths through the raw C calls. Prints "seg <pixels> <best>
// <iou...>" for the Rust test to compare with its own Segmenter, then "ok".
// Usage: segment LLM VISION SEGMENTER
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "dam.hpp"

#define REQUIRE(c) do { if (!(c)) { std::fprintf(stderr, "FAIL line %d: %s (%s)\n", __LINE__, #c, dam_last_error()); return 1; } } while (0)

static dam_status seg_status(dam_segmenter *s, const dam_image_view &img, const dam::Region &r, size_t mask_size) {
    std::vector<uint8_t> mask(mask_size + 1);
    float scores[8];
    return dam_segment(s, &img, &r.c(), 1, mask.data(), mask_size, scores, 8, nullptr, nullptr);
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const uint32_t W = 96, H = 72;
    std::vector<uint8_t> rgb(W * H * 3);
    for (uint32_t y = 0; y < H; y++)
        for (uint32_t x = 0; x < W; x++) {
            bool in = x > 30 && x < 70 && y > 20 && y < 55;
            uint8_t *p = &rgb[(y * W + x) * 3];
            p[0] = in ? 230 : static_cast<uint8_t>(x * 2);
            p[1] = in ? 40 : static_cast<uint8_t>(y * 3);
            p[2] = in ? 40 : 120;
        }
    auto img = dam::rgb(rgb.data(), W, H);
    auto click = dam::Region::points({{50.0f, 38.0f}, {5.0f, 5.0f}}, {1, 0});

    // On its own.
    dam::Segmenter seg(argv[3], 1);
    dam::Segmentation a = seg.segment(img, click);
    REQUIRE(a.mask.size() == W * H && a.scores.size() == 3 && a.best >= 0 && a.best < 3);
    size_t pixels = 0;
    for (uint8_t m : a.mask) { REQUIRE(m <= 1); pixels += m; }
    std::printf("seg %zu %d", pixels, a.best);
    for (float s : a.scores) std::printf(" %.6f", s);
    std::printf("\n");
    REQUIRE(seg.segment(img, click).mask == a.mask);  // the cached embedding, same answer
    REQUIRE(seg.segment(img, click, false).scores.size() == 1);
    REQUIRE(seg.segment(img, dam::Region::segmented_box(30, 20, 70, 55)).mask.size() == W * H);

    // Bad input: clear statuses, nothing written past the buffers.
    dam_segmenter *s = seg.get();
    REQUIRE(seg_status(s, img, click, W * H - 1) == DAM_STATUS_BUFFER_TOO_SMALL);
    REQUIRE(seg_status(s, img, dam::Region::points({{-1.0f, 5.0f}}), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::points({{NAN, 5.0f}}), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::points({{5.0f, INFINITY}}), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::points({}), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::points({{5.0f, 5.0f}}, {2}), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::segmented_box(10, 10, 10, 30), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::segmented_box(10, 10, 1e9f, 30), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(s, img, dam::Region::box(10, 10, 20, 30), W * H) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(seg_status(nullptr, img, click, W * H) == DAM_STATUS_INVALID_ARGUMENT);
    std::vector<uint8_t> mask(W * H);
    float few[1];
    REQUIRE(dam_segment(s, &img, &click.c(), 1, mask.data(), mask.size(), few, 1, nullptr, nullptr) ==
            DAM_STATUS_BUFFER_TOO_SMALL);
    REQUIRE(dam_segment(s, &img, &click.c(), 7, mask.data(), mask.size(), nullptr, 0, nullptr, nullptr) ==
            DAM_STATUS_INVALID_ARGUMENT);
    dam_segmenter *none = reinterpret_cast<dam_segmenter *>(1);
    REQUIRE(dam_segmenter_load(DAM_API_VERSION, "/nonexistent-segmenter.gguf", 1, &none) == DAM_STATUS_IO &&
            none == nullptr);
    REQUIRE(dam_segmenter_load(DAM_API_VERSION, argv[1], 1, &none) == DAM_STATUS_INVALID_MODEL);
    REQUIRE(dam_segmenter_load(DAM_API_VERSION, argv[3], -1, &none) == DAM_STATUS_INVALID_ARGUMENT);
    REQUIRE(dam_segmenter_load(DAM_API_VERSION + 1, argv[3], 1, &none) == DAM_STATUS_VERSION_MISMATCH);
    dam_segmenter_free(nullptr);

    // Points in dam_describe: refused without a segmenter, the message naming what to load...
    dam_model_params mp = dam_model_params_default();
    mp.n_threads = 1;
    auto opts = dam::Options().greedy().max_tokens(4);
    {
        dam::Model plain(argv[1], argv[2], mp);
        dam::Session session(plain);
        try {
            session.describe(img, click, opts);
            REQUIRE(false);
        } catch (const dam::Error &e) {
            REQUIRE(e.status() == DAM_STATUS_UNSUPPORTED_REGION);
            REQUIRE(std::string(e.what()).find("segmenter") != std::string::npos);
        }
    }
    // ...and the segmenter's mask with one (a 1.2-sized device struct still loads).
    dam_device_params d = dam::Model::device_defaults();
    REQUIRE(d.segmenter_path == nullptr);
    d.struct_size = offsetof(dam_device_params, segmenter_path);
    { dam::Model old(argv[1], argv[2], mp, d); }
    d.struct_size = sizeof d;
    d.segmenter_path = argv[3];
    dam::Model model(argv[1], argv[2], mp, d);
    dam::Session session(model);
    if (pixels > 0) {
        REQUIRE(!session.describe(img, click, opts).empty());
        REQUIRE(!session.describe(img, dam::Region::segmented_box(30, 20, 70, 55), opts).empty());
    }
    dam::Region normalized = dam::Region::points({{0.5f, 0.5f}});
    dam_region r = normalized.c();
    r.normalized = 1;
    char out[256];
    REQUIRE(dam_describe(session.get(), &img, &r, nullptr, nullptr, nullptr, out, sizeof out, nullptr) ==
            DAM_STATUS_INVALID_ARGUMENT);
    std::printf("ok\n");
    return 0;
}
