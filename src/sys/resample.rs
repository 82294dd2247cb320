//! The inner loop of the Pillow-exact horizontal resize (`preprocess::twopass`):
//! 4 channels of one output pixel per SSE2 `pmaddwd` and tap, exact.
//!
//! Pillow sums `x * k` (x: u8, k: i32 with 22 fractional bits, |k| < 2^23) in i32.
//! A product that wide does not fit `pmaddwd`'s i16 x i16, so each value and each
//! coefficient is split over the two i16 halves of one i32 lane:
//!
//! * value word `x | (x ^ 0x80) << 24`: halves `x` and `(x - 128) * 256`;
//! * coefficient pair `lo | hi << 16` with `lo = k & 0x7fff`, `hi = (k >> 15) * 128`;
//! * `pmaddwd` gives `x * lo + (x - 128) * (k >> 15) * 2^15 = x * k - 2^22 * (k >> 15)`
//!   (neither product reaches 2^31, so it never saturates);
//! * the start value adds back `2^22 * (k >> 15)` of every tap ([`Taps::new`]).
//!
//! All sums wrap like Pillow's i32 arithmetic, so the total is Pillow's bit for bit.

/// The value word of one 8-bit channel value (see the module documentation).
#[inline(always)]
pub const fn word(x: u8) -> u32 {
    x as u32 | ((x ^ 0x80) as u32) << 24
}

/// Where R, G, B sit in a source pixel of `bpp` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub bpp: usize,
    pub rgb: [usize; 3],
}

/// The value words of a row of pixels: `out[i] = [R, G, B, 0]` of pixel `i` as
/// [`word`]s (as many pixels as both hold).
pub fn words_row(row: &[u8], layout: Layout, out: &mut [[u32; 4]]) {
    let ok = layout.bpp >= 1 && layout.bpp <= 4 && layout.rgb.iter().all(|&o| o < layout.bpp);
    if !ok {
        return;
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("ssse3") {
            // SAFETY: the CPU has SSSE3 (checked just above).
            done = unsafe { words_row_ssse3(row, layout, out) };
        }
    }
    let (from, to) = ((done * layout.bpp).min(row.len()), done.min(out.len()));
    words_row_scalar(&row[from..], layout, &mut out[to..]);
}

fn words_row_scalar(row: &[u8], layout: Layout, out: &mut [[u32; 4]]) {
    let [r, g, b] = layout.rgb;
    for (o, p) in out.iter_mut().zip(row.chunks_exact(layout.bpp)) {
        *o = [word(p[r]), word(p[g]), word(p[b]), word(0)];
    }
}

/// [`words_row`] 4 pixels per 16-byte load and one `pshufb` per pixel; returns the
/// pixels done (the rest is left to the scalar loop: a load needs 16 bytes).
///
/// # Safety
/// The CPU must support SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn words_row_ssse3(row: &[u8], layout: Layout, out: &mut [[u32; 4]]) -> usize {
    use std::arch::x86_64::*;
    // Shuffle of pixel j of a group: byte 4c and byte 4c + 3 take channel c, the
    // rest (and all of lane 3) are zero (index 0x80).
    let shuf: [__m128i; 4] = std::array::from_fn(|j| {
        let mut m = [0x80u8; 16];
        for c in 0..3 {
            let src = (j * layout.bpp + layout.rgb[c]) as u8;
            m[4 * c] = src;
            m[4 * c + 3] = src;
        }
        // SAFETY: reads the 16 bytes of `m`.
        unsafe { _mm_loadu_si128(m.as_ptr().cast()) }
    });
    let flip = _mm_set1_epi32(0x8000_0000u32 as i32);
    let group = 4 * layout.bpp;
    let mut i = 0;
    for (chunk, o) in row.chunks_exact(group).zip(out.chunks_exact_mut(4)) {
        // The load reads 16 bytes from the group's start: stop where that passes the row.
        if i * layout.bpp + 16 > row.len() {
            break;
        }
        // SAFETY: `i * bpp + 16 <= row.len()`, so the 16 bytes from the group's start
        // are in `row`; each store writes the 16 bytes of one `[u32; 4]` of `o`.
        unsafe {
            let x = _mm_loadu_si128(chunk.as_ptr().cast());
            for (j, w) in o.iter_mut().enumerate() {
                let v = _mm_xor_si128(_mm_shuffle_epi8(x, shuf[j]), flip);
                _mm_storeu_si128(w.as_mut_ptr().cast(), v);
            }
        }
        i += 4;
    }
    i
}

/// Largest coefficient magnitude the split handles (exclusive).
const MAX_COEFF: i32 = 1 << 23;

/// Fixed-point coefficients of one axis in the split form, for [`hrow4`].
#[derive(Debug, Clone)]
pub struct Taps {
    ksize: usize,
    /// Pillow's coefficients, for the plain pass.
    k: Vec<i32>,
    /// Every coefficient fits the split (otherwise [`hrow4`] runs the plain pass).
    split: bool,
    /// Per output pixel: first source pixel and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `out * ksize` coefficient pairs, each repeated for the 4 channels (one
    /// 16-byte load per tap instead of a broadcast).
    pairs: Vec<[u32; 4]>,
    /// Per output pixel: the rounding constant plus the split's correction.
    init: Vec<i32>,
    /// One past the last source pixel any output reads.
    reach: usize,
}

impl Taps {
    /// From Pillow's table: `bounds[i] = (first, n)` and `k[i * ksize..][..n]`; `half`
    /// is the rounding constant every sum starts with. `None` when the table is
    /// inconsistent (a tap count above `ksize`, `k` too short).
    pub fn new(bounds: &[(usize, usize)], k: &[i32], ksize: usize, half: i32) -> Option<Taps> {
        let mut pairs = vec![[0u32; 4]; bounds.len() * ksize];
        let mut init = Vec::with_capacity(bounds.len());
        let mut reach = 0;
        let mut split = true;
        for (i, &(first, n)) in bounds.iter().enumerate() {
            if n > ksize {
                return None;
            }
            let ks = k.get(i * ksize..i * ksize + n)?;
            let mut s = half;
            for (p, &kv) in pairs[i * ksize..].iter_mut().zip(ks) {
                split &= -MAX_COEFF < kv && kv < MAX_COEFF;
                let hi = ((kv >> 15) * 128) as i16 as u16;
                *p = [(kv & 0x7fff) as u32 | u32::from(hi) << 16; 4];
                s = s.wrapping_add((kv >> 15).wrapping_mul(1 << 22));
            }
            init.push(s);
            reach = reach.max(first + n);
        }
        Some(Taps {
            ksize,
            k: k[..bounds.len() * ksize].to_vec(),
            split,
            bounds: bounds.to_vec(),
            pairs,
            init,
            reach,
        })
    }

    /// Output pixels.
    pub fn outputs(&self) -> usize {
        self.bounds.len()
    }
}

/// `pmaddwd` of one lane.
#[cfg(any(test, not(target_arch = "x86_64")))]
#[inline(always)]
fn madd(w: u32, p: u32) -> i32 {
    let lo = i32::from(w as u16 as i16) * i32::from(p as u16 as i16);
    let hi = i32::from((w >> 16) as u16 as i16) * i32::from((p >> 16) as u16 as i16);
    lo.wrapping_add(hi)
}

#[inline(always)]
fn clip8(s: i32) -> u8 {
    (s >> 22).clamp(0, 255) as u8
}

/// One row of the horizontal pass: `out[i]` (4 channels) from the value words `src`
/// (4 per source pixel). Returns false, writing nothing, when `src` is shorter
/// than the pixels the taps reach or `out` is not [`Taps::outputs`] long.
pub fn hrow4(src: &[[u32; 4]], taps: &Taps, out: &mut [[u8; 4]]) -> bool {
    if src.len() < taps.reach || out.len() != taps.outputs() {
        return false;
    }
    if !taps.split {
        hrow4_plain(src, taps, out);
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    {
        hrow4_sse2(src, taps, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        hrow4_scalar(src, taps, out);
    }
    true
}

/// Pillow's sums as they are (the low byte of a word is its value): for
/// coefficients the split does not take.
fn hrow4_plain(src: &[[u32; 4]], taps: &Taps, out: &mut [[u8; 4]]) {
    for (i, o) in out.iter_mut().enumerate() {
        let (first, n) = taps.bounds[i];
        let mut s = [1i32 << 21; 4];
        let k = &taps.k[i * taps.ksize..i * taps.ksize + n];
        for (w, &kv) in src[first..first + n].iter().zip(k) {
            for c in 0..4 {
                s[c] = s[c].wrapping_add(((w[c] & 0xff) as i32).wrapping_mul(kv));
            }
        }
        *o = s.map(clip8);
    }
}

/// The split pass without SIMD (elsewhere than x86_64; the tests' oracle).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn hrow4_scalar(src: &[[u32; 4]], taps: &Taps, out: &mut [[u8; 4]]) {
    for (i, o) in out.iter_mut().enumerate() {
        let (first, n) = taps.bounds[i];
        let mut s = [taps.init[i]; 4];
        let pairs = &taps.pairs[i * taps.ksize..i * taps.ksize + n];
        for (w, p) in src[first..first + n].iter().zip(pairs) {
            for c in 0..4 {
                s[c] = s[c].wrapping_add(madd(w[c], p[c]));
            }
        }
        *o = s.map(clip8);
    }
}

/// Long loop bodies on purpose: two accumulators hide `pmaddwd`'s latency.
#[cfg(target_arch = "x86_64")]
fn hrow4_sse2(src: &[[u32; 4]], taps: &Taps, out: &mut [[u8; 4]]) {
    use std::arch::x86_64::*;
    for (i, o) in out.iter_mut().enumerate() {
        let (first, n) = taps.bounds[i];
        let pairs = &taps.pairs[i * taps.ksize..i * taps.ksize + n];
        let px = &src[first..first + n];
        // SAFETY: SSE2 is part of the x86_64 baseline, so every intrinsic here is
        // available; each load reads the 16 bytes of one `[u32; 4]` of `px` or
        // `pairs`.
        let v = unsafe {
            let mut a = _mm_set1_epi32(taps.init[i]);
            let mut b = _mm_setzero_si128();
            let mut w2 = px.chunks_exact(2);
            let mut p2 = pairs.chunks_exact(2);
            for (w, p) in (&mut w2).zip(&mut p2) {
                let x0 = _mm_loadu_si128(w[0].as_ptr().cast());
                let x1 = _mm_loadu_si128(w[1].as_ptr().cast());
                let k0 = _mm_loadu_si128(p[0].as_ptr().cast());
                let k1 = _mm_loadu_si128(p[1].as_ptr().cast());
                a = _mm_add_epi32(a, _mm_madd_epi16(x0, k0));
                b = _mm_add_epi32(b, _mm_madd_epi16(x1, k1));
            }
            for (w, p) in w2.remainder().iter().zip(p2.remainder()) {
                let x = _mm_loadu_si128(w.as_ptr().cast());
                let k = _mm_loadu_si128(p.as_ptr().cast());
                a = _mm_add_epi32(a, _mm_madd_epi16(x, k));
            }
            let s = _mm_srai_epi32(_mm_add_epi32(a, b), 22);
            let s = _mm_packs_epi32(s, s);
            _mm_cvtsi128_si32(_mm_packus_epi16(s, s)) as u32
        };
        *o = v.to_le_bytes();
    }
}

/// One output row of the vertical pass: `out[i] = clip(half + sum_t rows[t][i] * k[t])`
/// with Pillow's i32 arithmetic and clip (`clamp(s >> 22, 0, 255)`). Returns false,
/// writing nothing, when `rows` and `k` differ in length or a row is shorter than
/// `out`.
pub fn vrow(rows: &[&[u8]], k: &[i32], half: i32, out: &mut [u8]) -> bool {
    if rows.len() != k.len() || rows.iter().any(|r| r.len() < out.len()) {
        return false;
    }
    // The high parts must fit i16.
    let split = k.iter().all(|&v| (-(1 << 26)..(1 << 26)).contains(&v));
    #[cfg(target_arch = "x86_64")]
    let done = if split {
        vrow_sse2(rows, k, half, out)
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0 * usize::from(split);
    for (i, o) in out.iter_mut().enumerate().skip(done) {
        let mut s = half;
        for (r, &kv) in rows.iter().zip(k) {
            s = s.wrapping_add(i32::from(r[i]).wrapping_mul(kv));
        }
        *o = clip8(s);
    }
    true
}

/// [`vrow`] 16 columns at a time, two taps per `pmaddwd`: the bytes of rows `t` and
/// `t + 1` side by side as i16 pairs, times the pair of high parts (`k >> 11`) and
/// the pair of low parts (`k & 0x7ff`) of their coefficients, in two sums joined
/// as `(hi << 11) + lo` (exact: no product or sum leaves i32 but the last, which
/// wraps as Pillow's does). Returns the columns done.
#[cfg(target_arch = "x86_64")]
fn vrow_sse2(rows: &[&[u8]], k: &[i32], half: i32, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let pair = |a: i32, b: i32| (a as u16 as u32 | (b as u16 as u32) << 16) as i32;
    // Per pair of taps: (hi, lo) coefficient pairs; an odd last tap pairs with 0.
    let coefs: Vec<(i32, i32)> = k
        .chunks(2)
        .map(|c| {
            let (k0, k1) = (c[0], c.get(1).copied().unwrap_or(0));
            (pair(k0 >> 11, k1 >> 11), pair(k0 & 0x7ff, k1 & 0x7ff))
        })
        .collect();
    let n = out.len() / 16 * 16;
    for (blk, o) in out[..n].chunks_exact_mut(16).enumerate() {
        let i = blk * 16;
        // SAFETY: SSE2 is part of the x86_64 baseline; every load reads 16 bytes
        // at `i` of a row at least `out.len() >= i + 16` long (checked by `vrow`),
        // the store writes the 16 bytes of `o`.
        unsafe {
            let z = _mm_setzero_si128();
            let mut hi = [z; 4];
            let mut lo = [z; 4];
            for (t, &(kh, kl)) in coefs.iter().enumerate() {
                let a = _mm_loadu_si128(rows[2 * t][i..].as_ptr().cast());
                let b = match rows.get(2 * t + 1) {
                    Some(r) => _mm_loadu_si128(r[i..].as_ptr().cast()),
                    None => z,
                };
                let (kh, kl) = (_mm_set1_epi32(kh), _mm_set1_epi32(kl));
                let l = _mm_unpacklo_epi8(a, b);
                let h = _mm_unpackhi_epi8(a, b);
                let p = [
                    _mm_unpacklo_epi8(l, z),
                    _mm_unpackhi_epi8(l, z),
                    _mm_unpacklo_epi8(h, z),
                    _mm_unpackhi_epi8(h, z),
                ];
                for j in 0..4 {
                    hi[j] = _mm_add_epi32(hi[j], _mm_madd_epi16(p[j], kh));
                    lo[j] = _mm_add_epi32(lo[j], _mm_madd_epi16(p[j], kl));
                }
            }
            let h0 = _mm_set1_epi32(half);
            let s: [__m128i; 4] = std::array::from_fn(|j| {
                let t = _mm_add_epi32(_mm_slli_epi32(hi[j], 11), _mm_add_epi32(lo[j], h0));
                _mm_srai_epi32(t, 22)
            });
            let w0 = _mm_packs_epi32(s[0], s[1]);
            let w1 = _mm_packs_epi32(s[2], s[3]);
            _mm_storeu_si128(o.as_mut_ptr().cast(), _mm_packus_epi16(w0, w1));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xorshift as rng;

    #[test]
    fn split_products_are_exact() {
        let mut r = rng(7);
        for _ in 0..100_000 {
            let x = r() as u8;
            let k = (r() % (2 * MAX_COEFF as u64 - 1)) as i32 - (MAX_COEFF - 1);
            let t = Taps::new(&[(0, 1)], &[k], 1, 0).unwrap();
            let got = t.init[0].wrapping_add(madd(word(x), t.pairs[0][0]));
            assert_eq!(got, i32::from(x) * k, "x={x} k={k}");
        }
        assert!(!Taps::new(&[(0, 1)], &[MAX_COEFF], 1, 0).unwrap().split);
        assert!(Taps::new(&[(0, 2)], &[1], 1, 0).is_none());
    }

    #[test]
    fn vertical_rows_match_scalar() {
        let mut r = rng(3);
        for taps in 1..=24usize {
            let len = 1 + (r() % 100) as usize + if taps % 2 == 0 { 1536 } else { 0 };
            let rows: Vec<Vec<u8>> = (0..taps)
                .map(|_| (0..len + (r() % 3) as usize).map(|_| r() as u8).collect())
                .collect();
            let refs: Vec<&[u8]> = rows.iter().map(|v| v.as_slice()).collect();
            let k: Vec<i32> = (0..taps)
                .map(|_| match r() % 4 {
                    0 => (r() % ((1 << 24) - 1)) as i32 - (1 << 23) + 1,
                    _ => (r() % (1 << 21)) as i32 - (1 << 19),
                })
                .collect();
            let mut out = vec![0u8; len];
            assert!(vrow(&refs, &k, 1 << 21, &mut out));
            for (i, &o) in out.iter().enumerate() {
                let mut s = 1i32 << 21;
                for (row, &kv) in rows.iter().zip(&k) {
                    s = s.wrapping_add(i32::from(row[i]).wrapping_mul(kv));
                }
                assert_eq!(o, clip8(s), "{taps} taps, column {i}");
            }
        }
        // coefficients beyond the split: the plain loop
        let wide = [1 << 27, -(1 << 28) + 5];
        let mut out = [0u8; 20];
        assert!(vrow(&[&[1; 20], &[2; 20]], &wide, 0, &mut out));
        assert_eq!(out[19], clip8((1 << 27) + 2 * (-(1 << 28) + 5)));
        assert!(!vrow(&[&[1, 2]], &[1, 2], 0, &mut [0]));
        assert!(!vrow(&[&[1]], &[1], 0, &mut [0, 0]));
    }

    #[test]
    fn words_rows_match_scalar() {
        let mut r = rng(5);
        for bpp in 1..=4 {
            for len in [0usize, 1, 3, 4, 5, 7, 8, 13, 64, 301] {
                let row: Vec<u8> = (0..len * bpp).map(|_| r() as u8).collect();
                let rgb = match bpp {
                    1 => [0, 0, 0],
                    2 => [1, 0, 1],
                    3 => [0, 1, 2],
                    _ => [2, 1, 0],
                };
                let l = Layout { bpp, rgb };
                let mut a = vec![[7u32; 4]; len];
                let mut b = vec![[9u32; 4]; len];
                words_row(&row, l, &mut a);
                words_row_scalar(&row, l, &mut b);
                assert_eq!(a, b, "bpp {bpp} len {len}");
            }
        }
    }

    #[test]
    fn simd_matches_scalar_on_random_data() {
        let mut r = rng(11);
        for case in 0..40 {
            let width = 1 + (r() % 300) as usize;
            let outs = 1 + (r() % 50) as usize;
            let ksize = 1 + (r() % 25) as usize;
            let mut bounds = Vec::new();
            let mut k = vec![0i32; outs * ksize];
            for i in 0..outs {
                let n = 1 + (r() as usize % ksize.min(width));
                let first = r() as usize % (width - n + 1);
                bounds.push((first, n));
                for kv in &mut k[i * ksize..i * ksize + n] {
                    // mostly plausible weights, some extreme ones
                    *kv = if case % 3 == 0 {
                        (r() % ((1 << 24) - 1)) as i32 - (1 << 23) + 1
                    } else {
                        (r() % (1 << 20)) as i32 - (1 << 18)
                    };
                }
            }
            if case % 7 == 0 {
                k[0] = MAX_COEFF + 5; // out of the split's range: the plain pass
            }
            let t = Taps::new(&bounds, &k, ksize, 1 << 21).unwrap();
            assert_eq!(t.split, case % 7 != 0);
            let src: Vec<[u32; 4]> = (0..width)
                .map(|_| [0; 4].map(|_: u32| word(r() as u8)))
                .collect();
            let mut a = vec![[0u8; 4]; outs];
            let mut b = vec![[0u8; 4]; outs];
            assert!(hrow4(&src, &t, &mut a));
            hrow4_plain(&src, &t, &mut b);
            assert_eq!(a, b, "case {case}");
            if t.split {
                hrow4_scalar(&src, &t, &mut b);
                assert_eq!(a, b, "case {case}");
            }
            // the plain i32 sum, as Pillow computes it
            for (i, px) in b.iter().enumerate() {
                let (first, n) = bounds[i];
                for c in 0..4 {
                    let mut s = 1i32 << 21;
                    for (j, &kv) in k[i * ksize..i * ksize + n].iter().enumerate() {
                        let x = (src[first + j][c] & 0xff) as i32;
                        s = s.wrapping_add(x.wrapping_mul(kv));
                    }
                    assert_eq!(px[c], clip8(s), "case {case} out {i} c {c}");
                }
            }
        }
        let t = Taps::new(&[(3, 2)], &[1, 2], 2, 0).unwrap();
        assert!(!hrow4(&[[0; 4]; 4], &t, &mut [[0; 4]]));
        assert!(!hrow4(&[[0; 4]; 5], &t, &mut [[0; 4]; 2]));
    }
}
