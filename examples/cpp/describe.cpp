// describe.cpp - describe a region of an image with dam's C++ wrapper (bindings/cpp/dam.hpp).
//
//   describe_cpp [--greedy] [--max-tokens N] [--query TEXT] [--threads N] [--stream] [--timings]
//                LLM.gguf VISION.gguf IMAGE.ppm (--mask MASK.pgm | --box X0,Y0,X1,Y1)
//
// Same inputs and output as examples/c/describe.c (binary PPM image, PGM mask).
//
// Build: c++ -std=c++17 -Iinclude -Ibindings/cpp examples/cpp/describe.cpp -Ltarget/release -ldam
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "dam.hpp"

namespace {

struct Pnm {
    std::vector<uint8_t> data;
    uint32_t width = 0, height = 0, channels = 0;
};

// Reads one header integer, skipping whitespace and comments.
bool pnm_int(std::istream &in, uint32_t &out) {
    int c = in.get();
    for (;;) {
        while (c == ' ' || c == '\t' || c == '\r' || c == '\n') c = in.get();
        if (c != '#') break;
        while (c != '\n' && c != EOF) c = in.get();
    }
    if (c < '0' || c > '9') return false;
    uint64_t v = 0;
    while (c >= '0' && c <= '9') {
        v = v * 10 + static_cast<uint64_t>(c - '0');
        if (v > 1000000) return false;
        c = in.get();
    }
    out = static_cast<uint32_t>(v);
    return true;
}

Pnm load_pnm(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    char magic[2] = {0, 0};
    Pnm img;
    uint32_t maxval = 0;
    if (!in.read(magic, 2) || magic[0] != 'P' || (magic[1] != '5' && magic[1] != '6') ||
        !pnm_int(in, img.width) || !pnm_int(in, img.height) || !pnm_int(in, maxval) || maxval != 255 ||
        img.width == 0 || img.height == 0) {
        throw std::runtime_error(path + ": not an 8-bit binary PPM/PGM");
    }
    img.channels = magic[1] == '6' ? 3 : 1;
    img.data.resize(static_cast<size_t>(img.width) * img.height * img.channels);
    if (!in.read(reinterpret_cast<char *>(img.data.data()), static_cast<std::streamsize>(img.data.size()))) {
        throw std::runtime_error(path + ": truncated");
    }
    return img;
}

dam_image_view view_of(const Pnm &p) {
    return dam::image(p.data.data(), p.width, p.height,
                      p.channels == 3 ? DAM_PIXEL_FORMAT_RGB8 : DAM_PIXEL_FORMAT_GRAY8);
}

int usage() {
    std::cerr << "usage: describe_cpp [--greedy] [--max-tokens N] [--query TEXT] [--threads N] [--stream] [--timings]\n"
                 "                    [--vision-device gpu|cpu] LLM.gguf VISION.gguf IMAGE.ppm (--mask MASK.pgm | --box X0,Y0,X1,Y1)\n";
    return 2;
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<std::string> paths;
    std::string mask_path;
    bool stream = false, timings = false, have_box = false;
    float box[4] = {0, 0, 0, 0};
    dam_device_params device = dam::Model::device_defaults();
    dam::Options opts;
    dam_model_params params = dam_model_params_default();
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--greedy") {
            opts.greedy();
        } else if (a == "--stream") {
            stream = true;
        } else if (a == "--timings") {
            timings = true;
        } else if (a == "--max-tokens" && i + 1 < argc) {
            opts.max_tokens(static_cast<uint32_t>(std::stoul(argv[++i])));
        } else if (a == "--query" && i + 1 < argc) {
            opts.query(argv[++i]);
        } else if (a == "--threads" && i + 1 < argc) {
            params.n_threads = std::stoi(argv[++i]);
        } else if (a == "--vision-device" && i + 1 < argc) {
            std::string d = argv[++i];
            if (d != "gpu" && d != "cpu") return usage();
            device.vision_device = d == "cpu" ? DAM_VISION_DEVICE_CPU : DAM_VISION_DEVICE_GPU;
        } else if (a == "--mask" && i + 1 < argc) {
            mask_path = argv[++i];
        } else if (a == "--box" && i + 1 < argc) {
            have_box = std::sscanf(argv[++i], "%f,%f,%f,%f", &box[0], &box[1], &box[2], &box[3]) == 4;
            if (!have_box) return usage();
        } else if (a.rfind("-", 0) == 0) {
            return usage();
        } else {
            paths.push_back(a);
        }
    }
    if (paths.size() != 3 || mask_path.empty() == !have_box) return usage();

    try {
        Pnm image = load_pnm(paths[2]);
        Pnm mask;
        dam::Region region = dam::Region::box(box[0], box[1], box[2], box[3]);
        if (!mask_path.empty()) {
            mask = load_pnm(mask_path);
            region = dam::Region::mask(view_of(mask));
        }
        dam::Model model(paths[0], paths[1], params, device);
        dam::Session session(model);
        dam::TokenCallback print;
        if (stream) {
            print = [](std::string_view piece) {
                std::cout << piece << std::flush;
                return true;
            };
        }
        std::string caption = session.describe(view_of(image), region, opts, print);
        if (stream) {
            std::cout << "\n";
        } else {
            std::cout << caption << "\n";
        }
        if (timings) {
            dam_timings t = session.timings();
            std::cerr << "preprocess " << t.preprocess_ms << " ms, vision " << t.vision_ms << " ms, prefill "
                      << t.prefill_ms << " ms (" << t.n_prompt_tokens << " tokens), decode " << t.decode_ms
                      << " ms (" << t.n_generated_tokens << " tokens)\n";
        }
    } catch (const dam::Error &e) {
        std::cerr << "describe_cpp: " << e.what() << " (status " << static_cast<int>(e.status()) << ")\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "describe_cpp: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
