//! Pillow-exact bicubic and bilinear resize of 8-bit images.
//!
//! Reproduces `PIL.Image.resize((w, h), Image.BICUBIC)` (and `BILINEAR`, which SAM's
//! processor uses; Pillow's `Resample.c`, 8 bits per channel) bit for bit, for any
//! number of interleaved channels:
//!
//! * coefficients per output pixel (`precompute_coeffs`): Keys cubic with a = -0.5
//!   (support 2) or the triangle (support 1),
//!   support scaled by the downscale factor (antialiasing), bounds rounded with C
//!   `(int)` truncation, weights normalised by their sum;
//! * fixed point with 22 fractional bits (`normalize_coeffs_8bpc`);
//! * horizontal pass first (only when the width changes), on just the source rows that
//!   the vertical pass reads, into an 8-bit intermediate; then the vertical pass (only
//!   when the height changes); each sum starts at `1 << 21` and is clipped as
//!   `clamp(sum >> 22, 0, 255)`.
//!
//! Channels are resized independently (Pillow premultiplies alpha for RGBA/LA images
//! before resizing; this function does not: it treats every channel as plain data).

use crate::error::{Error, Result};
use crate::image::{check_side, checked_len};

/// Fractional bits of the fixed-point coefficients: `32 - 8 - 2`.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Largest result [`resize_bicubic`] produces, in bytes (1 GiB).
pub const MAX_OUTPUT_BYTES: usize = 1 << 30;
/// Rounding constant every sum starts with.
pub(crate) const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's bicubic kernel (`bicubic_filter`, a = -0.5), same operation order.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `bilinear_filter` (the triangle).
fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// The resampling filter (Pillow's `Image.BICUBIC` / `Image.BILINEAR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bicubic,
    Bilinear,
}

impl Filter {
    /// The kernel and its support before scaling.
    fn kernel(self) -> (fn(f64) -> f64, f64) {
        match self {
            Filter::Bicubic => (bicubic, 2.0),
            Filter::Bilinear => (bilinear, 1.0),
        }
    }
}

/// Fixed-point filter coefficients for one axis.
#[derive(Debug, Clone)]
pub(crate) struct Coeffs {
    /// Coefficient slots per output pixel.
    pub(crate) ksize: usize,
    /// Per output pixel: first source index and number of taps.
    pub(crate) bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` fixed-point weights (unused slots are 0).
    pub(crate) k: Vec<i32>,
}

impl Coeffs {
    pub(crate) fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (min, n) = self.bounds[i];
        let base = i * self.ksize;
        (min, &self.k[base..base + n])
    }
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow, for the box `[0, in_size)`.
pub(crate) fn precompute(in_size: u32, out_size: u32, filter: Filter) -> Coeffs {
    let (kernel, base_support) = filter.kernel();
    // C: `(double)(in1 - in0) / outSize` with float in0 = 0, in1 = in_size (exact).
    let scale = f64::from(in_size as f32) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = base_support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut k = vec![0i32; out_size as usize * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        // C: `in0 + (xx + 0.5) * scale` with in0 = 0.
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let xmin = xmin as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let v = kernel(((x + xmin) as f64 - center + 0.5) * ss);
            *wx = v;
            ww += v;
        }
        let row = &mut k[xx * ksize..xx * ksize + n];
        for (kx, &wx) in row.iter_mut().zip(&w) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            let f = v * f64::from(1u32 << PRECISION_BITS);
            *kx = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, k }
}

#[inline(always)]
pub(crate) fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// How the source bytes enter the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Levels {
    /// As they are.
    Raw,
    /// A mask: every non-zero byte as 255 (Pillow's `fromarray(m * 255)`), so a
    /// mask is resized straight from its buffer, without a 0/255 copy.
    Binary,
}

/// A source byte as the filter reads it under `Levels::Binary` (`bin`) or `Raw`.
#[inline(always)]
fn level_u8(v: u8, bin: bool) -> u8 {
    if bin && v != 0 {
        255
    } else {
        v
    }
}

/// [`level_u8`] with the choice fixed at compile time, widened for the sums.
#[inline(always)]
fn level<const BIN: bool>(v: u8) -> i32 {
    i32::from(level_u8(v, BIN))
}

/// Horizontal pass, `C` channels: fills `out` (whole rows of `out_w * C` bytes) from the
/// source rows starting at row `first`. (Plain scalar code: on AVX2 it was as fast
/// as row-band transposition or `pmaddwd` dot products, which both need extra
/// passes over the data; see benches/RESULTS.md.)
fn horizontal<const C: usize, const BIN: bool>(
    src: &[u8],
    stride: usize,
    first: usize,
    co: &Coeffs,
    out: &mut [u8],
) {
    let out_w = co.bounds.len();
    for (r, orow) in out.chunks_exact_mut(out_w * C).enumerate() {
        let srow = &src[(first + r) * stride..];
        for (xx, opx) in orow.chunks_exact_mut(C).enumerate() {
            let (xmin, k) = co.taps(xx);
            let px = &srow[xmin * C..(xmin + k.len()) * C];
            let mut ss = [HALF; C];
            for (p, &kx) in px.chunks_exact(C).zip(k) {
                for c in 0..C {
                    ss[c] = ss[c].wrapping_add(level::<BIN>(p[c]).wrapping_mul(kx));
                }
            }
            for c in 0..C {
                opx[c] = clip8(ss[c]);
            }
        }
    }
}

/// Horizontal pass for a channel count without a specialised version.
fn horizontal_any(
    channels: usize,
    src: &[u8],
    stride: usize,
    first: usize,
    co: &Coeffs,
    bin: bool,
    out: &mut [u8],
) {
    let out_w = co.bounds.len();
    let mut ss = vec![0i32; channels];
    for (r, orow) in out.chunks_exact_mut(out_w * channels).enumerate() {
        let srow = &src[(first + r) * stride..];
        for (xx, opx) in orow.chunks_exact_mut(channels).enumerate() {
            let (xmin, k) = co.taps(xx);
            let px = &srow[xmin * channels..(xmin + k.len()) * channels];
            ss.fill(HALF);
            for (p, &kx) in px.chunks_exact(channels).zip(k) {
                for (s, &v) in ss.iter_mut().zip(p) {
                    *s = s.wrapping_add(i32::from(level_u8(v, bin)).wrapping_mul(kx));
                }
            }
            for (o, &s) in opx.iter_mut().zip(&ss) {
                *o = clip8(s);
            }
        }
    }
}

/// Vertical pass for the output rows `yy0..` that `out` holds: `src` rows (stride
/// `stride`) of `row_len` bytes, coefficient bounds relative to row `first` of `src`.
fn vertical<const BIN: bool>(
    src: &[u8],
    stride: usize,
    first: usize,
    row_len: usize,
    co: &Coeffs,
    yy0: usize,
    out: &mut [u8],
) {
    let mut acc = vec![0i32; row_len];
    for (yy, orow) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, k) = co.taps(yy0 + yy);
        acc.fill(HALF);
        for (y, &ky) in k.iter().enumerate() {
            let start = (ymin - first + y) * stride;
            let srow = &src[start..start + row_len];
            for (a, &v) in acc.iter_mut().zip(srow) {
                *a = a.wrapping_add(level::<BIN>(v).wrapping_mul(ky));
            }
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Work (multiply-adds) below which a pass is not split across threads
/// (this resize and the two-pass views alike).
pub(super) const MIN_PARALLEL_WORK: usize = 1 << 20;

/// Runs `f(first_row, band)` over `out` (rows of `row_len` bytes), split into up to
/// `threads` contiguous bands on scoped threads; the calling thread takes the first
/// band. A band whose thread cannot be spawned is computed on the calling thread.
fn par_rows<F>(out: &mut [u8], row_len: usize, threads: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [u8]) + Sync,
{
    let rows = out.len() / row_len.max(1);
    let threads = threads.min(rows).min(work / MIN_PARALLEL_WORK).max(1);
    if threads == 1 {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    let band_bytes = per * row_len;
    let mut failed = Vec::new();
    std::thread::scope(|s| {
        let f = &f;
        let mut bands = out.chunks_mut(band_bytes).enumerate();
        let own = bands.next();
        for (i, band) in bands {
            let spawned = std::thread::Builder::new()
                .name("dam-resize".into())
                .spawn_scoped(s, move || f(i * per, band));
            if spawned.is_err() {
                failed.push(i);
            }
        }
        if let Some((_, band)) = own {
            f(0, band);
        }
    });
    for i in failed {
        let start = i * band_bytes;
        let end = (start + band_bytes).min(out.len());
        f(i * per, &mut out[start..end]);
    }
}

/// Resizes an 8-bit image of `channels` interleaved channels to `out_width x out_height`
/// exactly like Pillow's `Image.resize(..., BICUBIC)` (see the module documentation).
///
/// `src` holds `height` rows of `width * channels` bytes, row `y` starting at byte
/// `y * stride` (the last row needs no padding). The result is packed:
/// `out_width * out_height * channels` bytes. Runs on the calling thread.
///
/// Errors (`InvalidArgument`): a side outside `1..=MAX_IMAGE_SIDE`, `channels` outside
/// `1..=64`, a stride smaller than a row, a buffer too short, or a result larger than
/// [`MAX_OUTPUT_BYTES`].
pub fn resize_bicubic(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    channels: usize,
    out_width: u32,
    out_height: u32,
) -> Result<Vec<u8>> {
    resize_threads(
        src,
        width,
        height,
        stride,
        channels,
        out_width,
        out_height,
        Filter::Bicubic,
        Levels::Raw,
        1,
    )
}

/// [`resize_bicubic`] with any `filter`, of the source bytes read as `levels` (a mask:
/// [`Levels::Binary`], the same result as resizing its 0/255 copy), using up to
/// `threads` threads (0 and 1 both mean the calling thread only; small images
/// always run on one). The result does not depend on `threads`.
///
/// Long (~100 lines) on purpose: Pillow's two passes (horizontal into a
/// row buffer, then vertical) with their coefficient tables and the row
/// split over threads stay together, the order Pillow's exactness needs.
#[allow(clippy::too_many_arguments)]
pub fn resize_threads(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    channels: usize,
    out_width: u32,
    out_height: u32,
    filter: Filter,
    levels: Levels,
    threads: usize,
) -> Result<Vec<u8>> {
    check_side("source width", width)?;
    check_side("source height", height)?;
    check_side("output width", out_width)?;
    check_side("output height", out_height)?;
    if channels == 0 || channels > 64 {
        return Err(Error::InvalidArgument(format!(
            "channel count {channels} is out of range (1..=64)"
        )));
    }
    let in_row = checked_len(width, 1, channels)?;
    if stride < in_row {
        return Err(Error::InvalidArgument(format!(
            "stride {stride} is smaller than one row ({in_row} bytes)"
        )));
    }
    let need = stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(in_row))
        .ok_or_else(|| Error::InvalidArgument("source size overflows".into()))?;
    if src.len() < need {
        return Err(Error::InvalidArgument(format!(
            "source buffer has {} bytes, needs {need}",
            src.len()
        )));
    }
    let out_row = checked_len(out_width, 1, channels)?;
    let out_len = checked_len(out_width, out_height, channels)?;
    if out_len > MAX_OUTPUT_BYTES {
        return Err(Error::InvalidArgument(format!(
            "resize output {out_width}x{out_height}x{channels} exceeds {MAX_OUTPUT_BYTES} bytes"
        )));
    }

    let need_h = out_width != width;
    let need_v = out_height != height;
    let bin = levels == Levels::Binary;
    if !need_h && !need_v {
        let mut out = Vec::with_capacity(out_len);
        for y in 0..height as usize {
            let row = &src[y * stride..y * stride + in_row];
            out.extend(row.iter().map(|&v| level_u8(v, bin)));
        }
        return Ok(out);
    }

    let cv = precompute(height, out_height, filter);
    // Source rows the vertical pass reads (all rows when there is no vertical pass).
    let (first, last) = if need_v {
        let (f, _) = cv.bounds[0];
        let (l, n) = cv.bounds[cv.bounds.len() - 1];
        (f, (l + n).max(f))
    } else {
        (0, height as usize)
    };

    let vertical_into = |src: &[u8], stride: usize, first: usize, row_len: usize, bin: bool| {
        let mut out = vec![0u8; out_len];
        let work = out_len.saturating_mul(cv.ksize);
        par_rows(&mut out, out_row, threads, work, |yy0, band| {
            if bin {
                vertical::<true>(src, stride, first, row_len, &cv, yy0, band)
            } else {
                vertical::<false>(src, stride, first, row_len, &cv, yy0, band)
            }
        });
        out
    };

    if need_h {
        let ch = precompute(width, out_width, filter);
        let rows = last - first;
        let mut tmp = vec![0u8; rows * out_row];
        let work = tmp.len().saturating_mul(ch.ksize);
        par_rows(&mut tmp, out_row, threads, work, |r0, band| {
            let f = first + r0;
            match (channels, bin) {
                (1, false) => horizontal::<1, false>(src, stride, f, &ch, band),
                (1, true) => horizontal::<1, true>(src, stride, f, &ch, band),
                (2, false) => horizontal::<2, false>(src, stride, f, &ch, band),
                (3, false) => horizontal::<3, false>(src, stride, f, &ch, band),
                (4, false) => horizontal::<4, false>(src, stride, f, &ch, band),
                (n, _) => horizontal_any(n, src, stride, f, &ch, bin, band),
            }
        });
        if !need_v {
            return Ok(tmp);
        }
        // The intermediate holds filtered levels already.
        Ok(vertical_into(&tmp, out_row, first, out_row, false))
    } else {
        Ok(vertical_into(src, stride, 0, in_row, bin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_values() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        assert_eq!(bicubic(0.5), 0.5625);
        assert_eq!(bicubic(-1.5), -0.0625);
    }

    #[test]
    fn coefficients_sum_to_one() {
        for &(i, o) in &[
            (2048u32, 384u32),
            (61, 384),
            (384, 384),
            (5, 3),
            (1, 7),
            (7, 1),
        ] {
            let c = precompute(i, o, Filter::Bicubic);
            for xx in 0..o as usize {
                let (min, k) = c.taps(xx);
                assert!(min + k.len() <= i as usize);
                let s: i64 = k.iter().map(|&v| i64::from(v)).sum();
                assert!(
                    (s - (1 << 22)).abs() <= k.len() as i64,
                    "{i}->{o} {xx}: {s}"
                );
            }
        }
    }

    #[test]
    fn identity_and_constant() {
        let src: Vec<u8> = (0..60).map(|v| (v * 4) as u8).collect();
        // stride 20 > 5*3
        let out = resize_bicubic(&src, 5, 3, 20, 3, 5, 3).unwrap();
        assert_eq!(&out[..15], &src[..15]);
        assert_eq!(&out[15..30], &src[20..35]);
        let flat = vec![77u8; 31 * 17 * 2];
        for &(w, h) in &[(1u32, 1u32), (5, 40), (100, 3), (31, 17)] {
            let out = resize_bicubic(&flat, 31, 17, 62, 2, w, h).unwrap();
            assert_eq!(out.len(), (w * h * 2) as usize);
            assert!(out.iter().all(|&v| v == 77));
        }
    }

    #[test]
    fn generic_channels_match_single_channel() {
        let w = 23u32;
        let h = 11u32;
        let planes: Vec<Vec<u8>> = (0..5)
            .map(|c| {
                (0..w * h)
                    .map(|i| ((i * 37 + c * 91) % 256) as u8)
                    .collect()
            })
            .collect();
        let mut inter = Vec::new();
        for i in 0..(w * h) as usize {
            for p in &planes {
                inter.push(p[i]);
            }
        }
        let out = resize_bicubic(&inter, w, h, w as usize * 5, 5, 9, 30).unwrap();
        for (c, p) in planes.iter().enumerate() {
            let single = resize_bicubic(p, w, h, w as usize, 1, 9, 30).unwrap();
            let got: Vec<u8> = out.iter().skip(c).step_by(5).copied().collect();
            assert_eq!(got, single);
        }
    }

    #[test]
    fn specialised_and_generic_passes_agree() {
        // Long runs of 0 / 255 (mask-like) with some noise; band sizes that are
        // and are not multiples of the row band; every specialised pass.
        fn check<const C: usize, const BIN: bool>(w: usize, h: usize, first: usize) {
            let stride = w * C + 3;
            let src: Vec<u8> = (0..stride * (h + first))
                .map(|i| match (i % stride) / 37 {
                    0 | 2 | 5 => 255,
                    3 => (i * 13 % 256) as u8,
                    _ => 0,
                })
                .collect();
            for &ow in &[1u32, 7, 40, 150, 301, 700] {
                let co = precompute(w as u32, ow, Filter::Bicubic);
                let mut fast = vec![0u8; h * ow as usize * C];
                let mut plain = vec![0u8; h * ow as usize * C];
                horizontal::<C, BIN>(&src, stride, first, &co, &mut fast);
                horizontal_any(C, &src, stride, first, &co, BIN, &mut plain);
                assert_eq!(fast, plain, "C={C} BIN={BIN} {w}x{h} -> {ow}");
            }
        }
        for (h, first) in [(5, 0), (8, 2), (19, 1)] {
            check::<1, false>(301, h, first);
            check::<1, true>(301, h, first);
            check::<2, false>(301, h, first);
            check::<3, false>(301, h, first);
            check::<4, false>(301, h, first);
        }
    }

    #[test]
    fn binary_levels_match_the_0_255_copy() {
        let (w, h) = (97u32, 61u32);
        let stride = w as usize + 5;
        let mask: Vec<u8> = (0..stride * h as usize)
            .map(|i| {
                if (i * 7919) % 13 < 5 {
                    (i % 7) as u8
                } else {
                    0
                }
            })
            .collect();
        let copy: Vec<u8> = mask.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
        for (ow, oh) in [(40, 40), (97, 30), (40, 61), (97, 61), (200, 150)] {
            for threads in [1, 3] {
                let a = resize_threads(
                    &mask,
                    w,
                    h,
                    stride,
                    1,
                    ow,
                    oh,
                    Filter::Bicubic,
                    Levels::Binary,
                    threads,
                )
                .unwrap();
                let b = resize_threads(
                    &copy,
                    w,
                    h,
                    stride,
                    1,
                    ow,
                    oh,
                    Filter::Bicubic,
                    Levels::Raw,
                    threads,
                )
                .unwrap();
                assert_eq!(a, b, "{w}x{h} -> {ow}x{oh}");
            }
        }
    }

    #[test]
    fn threads_do_not_change_the_result() {
        let (w, h) = (1500u32, 900u32);
        let src: Vec<u8> = (0..w * h * 3)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let one = resize_bicubic(&src, w, h, w as usize * 3, 3, 384, 384).unwrap();
        for t in [0, 2, 3, 16] {
            let (f, l) = (Filter::Bicubic, Levels::Raw);
            let many = resize_threads(&src, w, h, w as usize * 3, 3, 384, 384, f, l, t).unwrap();
            assert_eq!(one, many, "{t} threads");
        }
        // width unchanged (vertical pass only) and height unchanged (horizontal only)
        for (ow, oh) in [(w, 100), (100, h)] {
            let a = resize_bicubic(&src, w, h, w as usize * 3, 3, ow, oh).unwrap();
            let (f, l) = (Filter::Bicubic, Levels::Raw);
            let b = resize_threads(&src, w, h, w as usize * 3, 3, ow, oh, f, l, 4).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn bad_arguments() {
        let buf = vec![0u8; 64];
        assert!(resize_bicubic(&buf, 0, 1, 3, 3, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 12, 0, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 11, 3, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 6, 12, 3, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 12, 3, 0, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, usize::MAX, 1, 2, 2).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 12, 3, 2, 2).is_ok());
        // 16384 x 16384 x 64 bytes would be 16 GiB
        assert!(resize_bicubic(&buf, 1, 1, 64, 64, 16384, 16384).is_err());
        assert!(resize_bicubic(&buf, 1, 1, 64, 65, 2, 2).is_err());
    }
}
