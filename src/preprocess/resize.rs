//! Pillow-exact bicubic resize of 8-bit images.
//!
//! Reproduces `PIL.Image.resize((w, h), Image.BICUBIC)` (Pillow's `Resample.c`, 8 bits
//! per channel) bit for bit, for any number of interleaved channels:
//!
//! * coefficients per output pixel (`precompute_coeffs`): Keys cubic with a = -0.5,
//!   support 2 scaled by the downscale factor (antialiasing), bounds rounded with C
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
/// Rounding constant every sum starts with.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

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

/// Fixed-point filter coefficients for one axis.
#[derive(Debug, Clone)]
struct Coeffs {
    /// Coefficient slots per output pixel.
    ksize: usize,
    /// Per output pixel: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` fixed-point weights (unused slots are 0).
    k: Vec<i32>,
}

impl Coeffs {
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (min, n) = self.bounds[i];
        let base = i * self.ksize;
        (min, &self.k[base..base + n])
    }
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow, for the box `[0, in_size)`.
fn precompute(in_size: u32, out_size: u32) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    // C: `(double)(in1 - in0) / outSize` with float in0 = 0, in1 = in_size (exact).
    let scale = f64::from(in_size as f32) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut k = vec![0i32; out_size as usize * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
        let n = (xmax - xmin).clamp(0, ksize as i64) as usize;
        let xmin = xmin as usize;
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            let v = bicubic(((x + xmin) as f64 - center + 0.5) * ss);
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
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over `rows` source rows starting at row `first`, `C` channels.
fn horizontal<const C: usize>(
    src: &[u8],
    stride: usize,
    first: usize,
    rows: usize,
    co: &Coeffs,
    out: &mut [u8],
) {
    let out_w = co.bounds.len();
    for (r, orow) in out.chunks_exact_mut(out_w * C).take(rows).enumerate() {
        let srow = &src[(first + r) * stride..];
        for (xx, opx) in orow.chunks_exact_mut(C).enumerate() {
            let (xmin, k) = co.taps(xx);
            let px = &srow[xmin * C..(xmin + k.len()) * C];
            let mut ss = [HALF; C];
            for (p, &kx) in px.chunks_exact(C).zip(k) {
                for c in 0..C {
                    ss[c] = ss[c].wrapping_add(i32::from(p[c]).wrapping_mul(kx));
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
    rows: usize,
    co: &Coeffs,
    out: &mut [u8],
) {
    let out_w = co.bounds.len();
    let mut ss = vec![0i32; channels];
    for (r, orow) in out.chunks_exact_mut(out_w * channels).take(rows).enumerate() {
        let srow = &src[(first + r) * stride..];
        for (xx, opx) in orow.chunks_exact_mut(channels).enumerate() {
            let (xmin, k) = co.taps(xx);
            let px = &srow[xmin * channels..(xmin + k.len()) * channels];
            ss.fill(HALF);
            for (p, &kx) in px.chunks_exact(channels).zip(k) {
                for (s, &v) in ss.iter_mut().zip(p) {
                    *s = s.wrapping_add(i32::from(v).wrapping_mul(kx));
                }
            }
            for (o, &s) in opx.iter_mut().zip(&ss) {
                *o = clip8(s);
            }
        }
    }
}

/// Vertical pass: `src` rows (stride `stride`) of `row_len` bytes; coefficient bounds are
/// relative to row `first` of `src`.
fn vertical(src: &[u8], stride: usize, first: usize, row_len: usize, co: &Coeffs, out: &mut [u8]) {
    let mut acc = vec![0i32; row_len];
    for (yy, orow) in out.chunks_exact_mut(row_len).enumerate() {
        let (ymin, k) = co.taps(yy);
        acc.fill(HALF);
        for (y, &ky) in k.iter().enumerate() {
            let start = (ymin - first + y) * stride;
            let srow = &src[start..start + row_len];
            for (a, &v) in acc.iter_mut().zip(srow) {
                *a = a.wrapping_add(i32::from(v).wrapping_mul(ky));
            }
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Resizes an 8-bit image of `channels` interleaved channels to `out_width x out_height`
/// exactly like Pillow's `Image.resize(..., BICUBIC)` (see the module documentation).
///
/// `src` holds `height` rows of `width * channels` bytes, row `y` starting at byte
/// `y * stride` (the last row needs no padding). The result is packed:
/// `out_width * out_height * channels` bytes.
///
/// Errors (`InvalidArgument`): a side outside `1..=MAX_IMAGE_SIDE`, `channels == 0`, a
/// stride smaller than a row, or a buffer too short.
pub fn resize_bicubic(
    src: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    channels: usize,
    out_width: u32,
    out_height: u32,
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

    let need_h = out_width != width;
    let need_v = out_height != height;
    if !need_h && !need_v {
        let mut out = Vec::with_capacity(out_len);
        for y in 0..height as usize {
            out.extend_from_slice(&src[y * stride..y * stride + in_row]);
        }
        return Ok(out);
    }

    let cv = precompute(height, out_height);
    // Source rows the vertical pass reads (all rows when there is no vertical pass).
    let (first, last) = if need_v {
        let (f, _) = cv.bounds[0];
        let (l, n) = cv.bounds[cv.bounds.len() - 1];
        (f, (l + n).max(f))
    } else {
        (0, height as usize)
    };

    if need_h {
        let ch = precompute(width, out_width);
        let rows = last - first;
        let mut tmp = vec![0u8; rows * out_row];
        match channels {
            1 => horizontal::<1>(src, stride, first, rows, &ch, &mut tmp),
            2 => horizontal::<2>(src, stride, first, rows, &ch, &mut tmp),
            3 => horizontal::<3>(src, stride, first, rows, &ch, &mut tmp),
            4 => horizontal::<4>(src, stride, first, rows, &ch, &mut tmp),
            n => horizontal_any(n, src, stride, first, rows, &ch, &mut tmp),
        }
        if !need_v {
            return Ok(tmp);
        }
        let mut out = vec![0u8; out_len];
        vertical(&tmp, out_row, first, out_row, &cv, &mut out);
        Ok(out)
    } else {
        let mut out = vec![0u8; out_len];
        vertical(src, stride, 0, in_row, &cv, &mut out);
        Ok(out)
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
        for &(i, o) in &[(2048u32, 384u32), (61, 384), (384, 384), (5, 3), (1, 7), (7, 1)] {
            let c = precompute(i, o);
            for xx in 0..o as usize {
                let (min, k) = c.taps(xx);
                assert!(min + k.len() <= i as usize);
                let s: i64 = k.iter().map(|&v| i64::from(v)).sum();
                assert!((s - (1 << 22)).abs() <= k.len() as i64, "{i}->{o} {xx}: {s}");
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
            .map(|c| (0..w * h).map(|i| ((i * 37 + c * 91) % 256) as u8).collect())
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
    fn bad_arguments() {
        let buf = vec![0u8; 64];
        assert!(resize_bicubic(&buf, 0, 1, 3, 3, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 12, 0, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 11, 3, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 6, 12, 3, 4, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 12, 3, 0, 4).is_err());
        assert!(resize_bicubic(&buf, 4, 4, usize::MAX, 1, 2, 2).is_err());
        assert!(resize_bicubic(&buf, 4, 4, 12, 3, 2, 2).is_ok());
    }
}
