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
/// are larger: a resize then crop). Separable, with torch's order of
/// operations: each source row is interpolated along x once (`wx0 * a +
/// wx1 * b`, as torch's inner term), then rows blend along y (`wy0 * r0 +
/// wy1 * r1`), so the values equal the direct four-tap formula's.
fn bilinear(
    src: &[f32],
    (ih, iw): (usize, usize),
    (full_h, full_w): (usize, usize),
    (keep_h, keep_w): (usize, usize),
) -> Vec<f32> {
    let ty = taps(ih, full_h, keep_h);
    let tx = taps(iw, full_w, keep_w);
    // The two source rows in use, interpolated along x (the taps along y
    // only move forward, so each row is made once).
    let mut rows: [(usize, Vec<f32>); 2] = [(usize::MAX, Vec::new()), (usize::MAX, Vec::new())];
    let mut out = Vec::with_capacity(keep_h * keep_w);
    for &(y0, y1, wy0, wy1) in &ty {
        for (y, other) in [(y0, y1), (y1, y0)] {
            if rows[0].0 != y && rows[1].0 != y {
                let r = &src[y * iw..(y + 1) * iw];
                let slot = usize::from(rows[0].0 == other);
                rows[slot] = (
                    y,
                    tx.iter()
                        .map(|&(x0, x1, wx0, wx1)| wx0 * r[x0] + wx1 * r[x1])
                        .collect(),
                );
            }
        }
        let row = |y: usize| &rows[usize::from(rows[0].0 != y)].1;
        let (r0, r1) = (row(y0), row(y1));
        out.extend(r0.iter().zip(r1).map(|(&a, &b)| wy0 * a + wy1 * b));
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

    /// torch's four-tap formula, one output pixel at a time.
    fn direct(
        src: &[f32],
        (ih, iw): (usize, usize),
        full: (usize, usize),
        keep: (usize, usize),
    ) -> Vec<f32> {
        let mut out = Vec::new();
        for &(y0, y1, wy0, wy1) in &taps(ih, full.0, keep.0) {
            for &(x0, x1, wx0, wx1) in &taps(iw, full.1, keep.1) {
                let (a, b) = (&src[y0 * iw..], &src[y1 * iw..]);
                out.push(wy0 * (wx0 * a[x0] + wx1 * a[x1]) + wy1 * (wx0 * b[x0] + wx1 * b[x1]));
            }
        }
        out
    }

    #[test]
    fn separable_equals_the_four_tap_formula() {
        let mut seed = 7u32;
        let src: Vec<f32> = (0..37 * 23)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        let cases = [
            ((37, 23), (256, 100), (200, 77)), // up, then crop
            ((37, 23), (37, 23), (37, 23)),    // identity
            ((37, 23), (10, 9), (10, 9)),      // down (rows skipped)
            ((37, 23), (38, 5), (38, 5)),      // nearly equal / down
            ((37, 23), (1, 1), (1, 1)),
        ];
        for (inp, full, keep) in cases {
            let a = bilinear(&src, inp, full, keep);
            let b = direct(&src, inp, full, keep);
            assert_eq!(a.len(), keep.0 * keep.1);
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{full:?}"
            );
        }
    }

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
