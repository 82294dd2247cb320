// dam.hpp - a small header-only C++17 RAII wrapper over dam's C API (dam.h).
//
//   dam::Model model("m-llm-f16.gguf", "m-vision-f16.gguf");
//   dam::Session session(model);
//   auto opts = dam::Options().greedy().max_tokens(64);
//   std::string text = session.describe(dam::rgb(pixels, w, h), dam::Region::box(10, 20, 200, 180),
//                                       opts, [](std::string_view piece) { std::cout << piece; return true; });
//
// Every failure throws dam::Error, which carries the dam_status and dam_last_error()'s message.
// Objects free themselves; a Model may be shared by threads (copies share the same model),
// a Session serves one thread at a time (movable, not copyable). An exception thrown by a
// token callback stops generation and is rethrown by describe() (it never crosses the C API).
#ifndef DAM_HPP
#define DAM_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dam.h"

namespace dam {

/// A failed dam call: the status and the library's message.
class Error : public std::runtime_error {
  public:
    Error(dam_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    dam_status status() const noexcept { return status_; }

  private:
    dam_status status_;
};

/// Throws dam::Error for any status but DAM_STATUS_OK.
inline void check(dam_status status) {
    if (status != DAM_STATUS_OK) {
        throw Error(status, std::string(dam_status_string(status)) + ": " + dam_last_error());
    }
}

/// Image views over caller memory (stride 0 = packed rows).
inline dam_image_view image(const void *data, uint32_t width, uint32_t height, dam_pixel_format format,
                            size_t stride_bytes = 0) {
    size_t bpp = format == DAM_PIXEL_FORMAT_RGB8 ? 3 : format == DAM_PIXEL_FORMAT_GRAY8 ? 1 : 4;
    dam_image_view v;
    v.data = static_cast<const uint8_t *>(data);
    v.width = width;
    v.height = height;
    v.stride_bytes = stride_bytes ? stride_bytes : static_cast<size_t>(width) * bpp;
    v.format = format;
    return v;
}
inline dam_image_view rgb(const void *data, uint32_t w, uint32_t h, size_t stride = 0) {
    return image(data, w, h, DAM_PIXEL_FORMAT_RGB8, stride);
}
inline dam_image_view gray(const void *data, uint32_t w, uint32_t h, size_t stride = 0) {
    return image(data, w, h, DAM_PIXEL_FORMAT_GRAY8, stride);
}

/// A region; owns the points of a scribble.
class Region {
  public:
    static Region mask(const dam_image_view &mask) {
        Region r(DAM_REGION_KIND_MASK);
        r.r_.mask = mask;
        return r;
    }
    static Region alpha() { return Region(DAM_REGION_KIND_ALPHA); }
    static Region box(float x0, float y0, float x1, float y1, bool normalized = false) {
        Region r(DAM_REGION_KIND_BOX);
        r.r_.x0 = x0;
        r.r_.y0 = y0;
        r.r_.x1 = x1;
        r.r_.y1 = y1;
        r.r_.normalized = normalized ? 1 : 0;
        return r;
    }
    static Region scribble(std::vector<dam_point> points, float brush_width, bool normalized = false) {
        Region r(DAM_REGION_KIND_SCRIBBLE);
        r.points_ = std::move(points);
        r.r_.brush_width = brush_width;
        r.r_.normalized = normalized ? 1 : 0;
        return r;
    }
    /// Clicks in pixels (labels: 1 positive, 0 negative; empty = all positive). They need a
    /// segmenter (the model's, or `Segmenter`); without one DAM_STATUS_UNSUPPORTED_REGION.
    static Region points(std::vector<dam_point> points, std::vector<int32_t> labels = {}) {
        Region r(DAM_REGION_KIND_POINTS);
        r.points_ = std::move(points);
        r.labels_ = std::move(labels);
        return r;
    }
    /// A box in pixels given to the segmenter, whose mask is the region (API 1.4).
    static Region segmented_box(float x0, float y0, float x1, float y1) {
        Region r = box(x0, y0, x1, y1);
        r.r_.kind = DAM_REGION_KIND_SEGMENTED_BOX;
        return r;
    }
    /// The C struct; valid while this Region lives and is not modified.
    const dam_region &c() const {
        r_.points = points_.empty() ? nullptr : points_.data();
        r_.n_points = points_.size();
        r_.point_labels = labels_.empty() ? nullptr : labels_.data();
        return r_;
    }

  private:
    explicit Region(dam_region_kind kind) : r_() {
        r_.struct_size = sizeof(dam_region);
        r_.kind = kind;
    }
    mutable dam_region r_;
    std::vector<dam_point> points_;
    std::vector<int32_t> labels_;
};

/// The result of `Segmenter::segment`: the selected mask (width * height bytes, 1 = inside),
/// every candidate's predicted IoU and the selected index.
struct Segmentation {
    std::vector<uint8_t> mask;
    std::vector<float> scores;
    int32_t best = 0;
};

/// A segmenter on its own (API 1.4); copies share it (calls are serialised).
class Segmenter {
  public:
    explicit Segmenter(const std::string &path, int32_t n_threads = 0) {
        dam_segmenter *s = nullptr;
        check(dam_segmenter_load(DAM_API_VERSION, path.c_str(), n_threads, &s));
        seg_.reset(s, dam_segmenter_free);
    }
    /// Clicks (`Region::points`) or a box (`Region::segmented_box`) on `image`.
    Segmentation segment(const dam_image_view &image, const Region &region, bool multimask = true) const {
        Segmentation out;
        out.mask.resize(static_cast<size_t>(image.width) * image.height);
        out.scores.resize(8);
        size_t n = 0;
        check(dam_segment(seg_.get(), &image, &region.c(), multimask ? 1 : 0, out.mask.data(), out.mask.size(),
                          out.scores.data(), out.scores.size(), &n, &out.best));
        out.scores.resize(n);
        return out;
    }
    dam_segmenter *get() const noexcept { return seg_.get(); }

  private:
    std::shared_ptr<dam_segmenter> seg_;
};

/// Describe options with chainable setters (defaults: dam_describe_options_default()).
class Options {
  public:
    Options() : o_(dam_describe_options_default()) {}
    Options &greedy() {
        o_.temperature = 0.0f;
        return *this;
    }
    Options &temperature(float t) {
        o_.temperature = t;
        return *this;
    }
    Options &top_p(float p) {
        o_.top_p = p;
        return *this;
    }
    Options &top_k(int32_t k) {
        o_.top_k = k;
        return *this;
    }
    Options &seed(uint32_t s) {
        o_.seed = s;
        return *this;
    }
    Options &max_tokens(uint32_t n) {
        o_.max_new_tokens = n;
        return *this;
    }
    Options &query(std::string q) {
        query_ = std::move(q);
        has_query_ = true;
        return *this;
    }
    Options &length(dam_length kind, uint32_t n) {
        o_.length_kind = kind;
        o_.length_value = n;
        return *this;
    }
    const dam_describe_options &c() const {
        o_.query = has_query_ ? query_.c_str() : nullptr;
        return o_;
    }

  private:
    mutable dam_describe_options o_;
    std::string query_;
    bool has_query_ = false;
};

/// Receives caption pieces; return false to stop.
using TokenCallback = std::function<bool(std::string_view)>;
/// Receives region `k`'s caption pieces in a batch; return false to stop that region.
using BatchTokenCallback = std::function<bool(size_t, std::string_view)>;

/// A loaded model; copies share it (thread-safe).
class Model {
  public:
    Model(const std::string &llm_path, const std::string &vision_path,
          const dam_model_params &params = dam_model_default_params()) {
        dam_model *m = nullptr;
        check(dam_model_load(DAM_API_VERSION, llm_path.c_str(), vision_path.c_str(), &params, &m));
        model_.reset(m, dam_model_free);
    }
    /// With device choices (API 1.2); see `device_defaults()`.
    Model(const std::string &llm_path, const std::string &vision_path, const dam_model_params &params,
          const dam_device_params &device) {
        dam_model *m = nullptr;
        check(dam_model_load_on(DAM_API_VERSION, llm_path.c_str(), vision_path.c_str(), &params, &device, &m));
        model_.reset(m, dam_model_free);
    }
    /// The default device choices: the main GPU (0) when there is one, vision there too; set
    /// `segmenter_path` (API 1.4) to load a segmenter with the model for point regions.
    static dam_device_params device_defaults() {
        dam_device_params d;
        check(dam_device_params_init(&d, sizeof d));
        return d;
    }
    dam_model *get() const noexcept { return model_.get(); }
    uint32_t max_frames() const noexcept { return dam_model_max_frames(model_.get()); }

  private:
    std::shared_ptr<dam_model> model_;
};

/// A session: one thread at a time.
class Session {
  public:
    explicit Session(const Model &model, const dam_session_params &params = dam_session_default_params()) {
        dam_session *s = nullptr;
        check(dam_session_new(model.get(), &params, &s));
        session_.reset(s);
    }
    dam_session *get() const noexcept { return session_.get(); }

    std::string describe(const dam_image_view &image, const Region &region, const Options &options = Options(),
                         const TokenCallback &on_token = TokenCallback()) {
        return run(on_token, [&](dam_token_callback cb, void *ud, char *out, size_t cap, size_t *len) {
            return dam_describe(session_.get(), &image, &region.c(), &options.c(), cb, ud, out, cap, len);
        });
    }

    std::string describe_video(const std::vector<dam_image_view> &images, const std::vector<Region> &regions,
                               const Options &options = Options(), const TokenCallback &on_token = TokenCallback()) {
        if (images.size() != regions.size()) {
            throw Error(DAM_STATUS_INVALID_ARGUMENT, "describe_video: one region per image is needed");
        }
        std::vector<dam_region> rs;
        rs.reserve(regions.size());
        for (const Region &r : regions) rs.push_back(r.c());
        return run(on_token, [&](dam_token_callback cb, void *ud, char *out, size_t cap, size_t *len) {
            return dam_describe_video(session_.get(), images.data(), rs.data(), images.size(), &options.c(), cb,
                                      ud, out, cap, len);
        });
    }

    /// Describes several regions of one image in one call (batched vision, parallel decoding);
    /// one caption per region, each equal to describe()'s for that region.
    std::vector<std::string> describe_batch(const dam_image_view &image, const std::vector<Region> &regions,
                                            const Options &options = Options(),
                                            const BatchTokenCallback &on_token = BatchTokenCallback()) {
        std::vector<dam_region> rs;
        rs.reserve(regions.size());
        for (const Region &r : regions) rs.push_back(r.c());
        BatchState state{&on_token, nullptr};
        dam_status st = dam_describe_batch(session_.get(), &image, rs.data(), rs.size(), &options.c(),
                                           on_token ? &Session::batch_trampoline : nullptr, &state);
        if (state.error) std::rethrow_exception(state.error);
        check(st);
        std::vector<std::string> out;
        for (size_t k = 0, n = dam_session_caption_count(session_.get()); k < n; k++) out.push_back(caption(k));
        return out;
    }

    /// Caption `index` of the last successful describe call (0 for describe(), the region's index
    /// for describe_batch()).
    std::string caption(size_t index) const {
        size_t len = 0;
        dam_status st = dam_session_caption(session_.get(), index, nullptr, 0, &len);
        if (st != DAM_STATUS_BUFFER_TOO_SMALL) check(st);
        std::string s(len, '\0');
        check(dam_session_caption(session_.get(), index, &s[0], s.size(), &len));
        s.resize(len - 1);
        return s;
    }

    /// Cancels the running (or next) describe call; any thread.
    void cancel() const noexcept { dam_session_cancel(session_.get()); }

    /// The caption of the last successful describe call ("" if none).
    std::string last_caption() const {
        size_t len = 0;
        dam_status st = dam_session_last_caption(session_.get(), nullptr, 0, &len);
        if (st != DAM_STATUS_BUFFER_TOO_SMALL) check(st);
        std::string s(len, '\0');
        check(dam_session_last_caption(session_.get(), &s[0], s.size(), &len));
        s.resize(len - 1);
        return s;
    }

    dam_timings timings() const {
        dam_timings t = dam_timings();
        t.struct_size = sizeof t;
        check(dam_session_timings(session_.get(), &t));
        return t;
    }

  private:
    struct Deleter {
        void operator()(dam_session *s) const noexcept { dam_session_free(s); }
    };
    struct CallbackState {
        const TokenCallback *fn;
        std::exception_ptr error;
    };
    static bool trampoline(const char *piece, size_t len, void *user_data) noexcept {
        auto *st = static_cast<CallbackState *>(user_data);
        try {
            return (*st->fn)(std::string_view(piece, len));
        } catch (...) {
            st->error = std::current_exception();
            return false;
        }
    }
    struct BatchState {
        const BatchTokenCallback *fn;
        std::exception_ptr error;
    };
    static bool batch_trampoline(size_t region, const char *piece, size_t len, void *user_data) noexcept {
        auto *st = static_cast<BatchState *>(user_data);
        try {
            return (*st->fn)(region, std::string_view(piece, len));
        } catch (...) {
            st->error = std::current_exception();
            return false;
        }
    }
    template <class Call>
    std::string run(const TokenCallback &on_token, Call call) {
        CallbackState state{&on_token, nullptr};
        std::string out(1024, '\0');
        size_t len = 0;
        dam_status st = call(on_token ? &Session::trampoline : nullptr, &state, &out[0], out.size(), &len);
        if (state.error) std::rethrow_exception(state.error);
        if (st == DAM_STATUS_BUFFER_TOO_SMALL) return last_caption();
        check(st);
        out.resize(len - 1);
        return out;
    }
    std::unique_ptr<dam_session, Deleter> session_;
};

}  // namespace dam

#endif  // DAM_HPP
