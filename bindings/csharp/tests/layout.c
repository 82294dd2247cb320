/* Prints the size of each dam.h struct and the offset of each field ("name size", "name.field
 * offset"): the C# test compares its [StructLayout] structs with these lines. */
#include <stddef.h>
#include <stdio.h>

#include "dam.h"

#define S(t) printf(#t " %zu\n", sizeof(t))
#define F(t, f) printf(#t "." #f " %zu\n", offsetof(t, f))

int main(void) {
    S(dam_model_params);
    F(dam_model_params, struct_size); F(dam_model_params, n_threads); F(dam_model_params, n_ctx);
    F(dam_model_params, kv_type); F(dam_model_params, flash_attn); F(dam_model_params, n_gpu_layers);
    F(dam_model_params, progress_callback); F(dam_model_params, progress_user_data);
    F(dam_model_params, log_callback); F(dam_model_params, log_user_data); F(dam_model_params, log_level);
    F(dam_model_params, n_seq_max);
    S(dam_session_params);
    F(dam_session_params, struct_size); F(dam_session_params, n_threads);
    S(dam_describe_options);
    F(dam_describe_options, struct_size); F(dam_describe_options, max_new_tokens); F(dam_describe_options, query);
    F(dam_describe_options, length_kind); F(dam_describe_options, length_value);
    F(dam_describe_options, temperature); F(dam_describe_options, top_p); F(dam_describe_options, top_k);
    F(dam_describe_options, seed);
    S(dam_device_params);
    F(dam_device_params, struct_size); F(dam_device_params, main_gpu); F(dam_device_params, vision_device);
    F(dam_device_params, repack); F(dam_device_params, segmenter_path);
    S(dam_image_view);
    F(dam_image_view, data); F(dam_image_view, width); F(dam_image_view, height);
    F(dam_image_view, stride_bytes); F(dam_image_view, format);
    S(dam_point);
    F(dam_point, x); F(dam_point, y);
    S(dam_region);
    F(dam_region, struct_size); F(dam_region, kind); F(dam_region, normalized); F(dam_region, brush_width);
    F(dam_region, x0); F(dam_region, y0); F(dam_region, x1); F(dam_region, y1); F(dam_region, mask);
    F(dam_region, points); F(dam_region, n_points); F(dam_region, point_labels);
    S(dam_timings);
    F(dam_timings, struct_size); F(dam_timings, n_prompt_tokens); F(dam_timings, n_generated_tokens);
    F(dam_timings, preprocess_ms); F(dam_timings, vision_ms); F(dam_timings, prefill_ms);
    F(dam_timings, decode_ms);
    return 0;
}
