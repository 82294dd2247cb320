//! `post_process_masks`: low-resolution logits -> a mask of the original
//! size. Bilinear (`F.interpolate`, `align_corners=False`) to the padded
//! input side, crop to the resized image, bilinear to the original size,
//! threshold `> 0`. The first upsampling is only computed inside the crop
//! (each output pixel depends on its own taps only).

/// Torch's bilinear taps along one axis: for each output index, the two
/// source indices and their weights (`area_pixel_compute_source_index`
/// and `guard_index_and_lambda`, in f32).
fn taps(in_size: usize, out_size: usize, count: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_size as f32 / out_size as f32;
    (0..count)
        .map(|i| {
            let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_size - 1);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of a row-major `ih x iw` plane to `oh x ow` (the first
/// `keep_h x keep_w` outputs of a resize to `full_h x full_w` when those
/// are larger: a resize then crop).
#[allow(clippy::too_many_arguments)]
fn bilinear(
    src: &[f32],
    (ih, iw): (usize, usize),
    (full_h, full_w): (usize, usize),
    (keep_h, keep_w): (usize, usize),
) -> Vec<f32> {
    let ty = taps(ih, full_h, keep_h);
    let tx = taps(iw, full_w, keep_w);
    let mut out = Vec::with_capacity(keep_h * keep_w);
    for &(y0, y1, wy0, wy1) in &ty {
        let (r0, r1) = (&src[y0 * iw..(y0 + 1) * iw], &src[y1 * iw..(y1 + 1) * iw]);
        for &(x0, x1, wx0, wx1) in &tx {
            out.push(wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]));
        }
    }
    out
}

/// The binary mask (1 inside) of the original `(height, width)` from one
/// plane of low-resolution logits (`low_side` square), for an input
/// padded to `pad_side` whose image part was `resized` (height, width).
pub fn upscale_mask(
    low: &[f32],
    low_side: usize,
    pad_side: usize,
    resized: (usize, usize),
    original: (usize, usize),
) -> Vec<u8> {
    let padded = bilinear(low, (low_side, low_side), (pad_side, pad_side), resized);
    let full = bilinear(&padded, resized, original, original);
    full.iter().map(|&v| u8::from(v > 0.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant() {
        let src: Vec<f32> = (0..12).map(|v| v as f32 - 5.5).collect();
        assert_eq!(bilinear(&src, (3, 4), (3, 4), (3, 4)), src);
        let ones = vec![1.0f32; 16];
        assert!(bilinear(&ones, (4, 4), (9, 7), (9, 7))
            .iter()
            .all(|&v| v == 1.0));
    }
}
