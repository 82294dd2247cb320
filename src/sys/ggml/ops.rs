//! dam's own CPU ops, run by ggml as custom-op nodes.
//!
//! SAM's attention with decomposed relative positions: the softmax of
//! `scale * scores + rel_h[k_h] + rel_w[k_w]` in one pass over the scores
//! (ggml ops would scale, add twice and soften in four passes over a
//! [4096, 4096, heads] tensor in each global layer).
//!
//! GELU with erf: ggml's CPU kernel calls libm's scalar `erff` per element,
//! which took ~13% of MobileSAM's encoder and most of SAM's mask upscaling.
//! Here erf is the Abramowitz & Stegun 7.1.26 formula (absolute error
//! <= 1.5e-7), the one PyTorch's vectorised CPU `erf` uses, with an exp that
//! the compiler vectorises; the arithmetic is plain f32 over fixed chunks.
//!
//! GELU with tanh (SigLIP's `gelu_pytorch_tanh`) at f32: ggml's own kernel
//! reads an f16 table (~1e-3 off, too coarse for reference parity), and the
//! exact form built from ggml ops took seven passes and libm's scalar
//! `tanhf` (~8% of an f32 vision request). Here it is one vectorised pass,
//! `x * sigmoid(2u)` (the same function as `0.5 x (1 + tanh u)`) with the
//! same exp.

use std::os::raw::{c_int, c_void};

use super::ffi;

/// Elements per chunk when input and output overlap.
const CHUNK: usize = 256;

/// Thread `ith` of `nth`'s contiguous share `[start, end)` of `n` items.
fn share(n: usize, ith: c_int, nth: c_int) -> (usize, usize) {
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    let per = n.div_ceil(nth);
    ((ith * per).min(n), ((ith + 1) * per).min(n))
}

/// `exp(x)` for `x <= 0` (the erf formula's `exp(-x^2)`), relative error
/// ~2e-7: `2^n * p(r)` with `x = n ln2 + r`, `|r| <= ln2 / 2`, `p` the
/// degree-6 Taylor polynomial.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // max/min, not clamp: NaN becomes -87 here (no NaN checks in the
    // vector code) and comes back through the caller's other terms.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(0.0);
    let k = x * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k's low mantissa bits hold n (in [-126, 0]); 2^n is the normal f32
    // with exponent n. Integer bit operations only, so this vectorises
    // (a float-to-int `as` cast would not: it saturates).
    let n_int = k.to_bits() as i32 - ROUND.to_bits() as i32;
    p * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// `0.5 x (1 + erf(x / sqrt 2))`, erf by A&S 7.1.26.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let erf_abs = 1.0 - poly * exp_neg(-a * a);
    let erf = erf_abs.copysign(z);
    0.5 * x * (1.0 + erf)
}

/// `0.5 x (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`, computed as
/// `x * sigmoid(2u)` with `e = exp(-2|u|)`: `x / (1 + e)` for `u >= 0`,
/// `x e / (1 + e)` below (no cancellation, no overflow).
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    // sqrt(2 / pi)
    const C: f32 = 0.797_884_6;
    let u = C * x * (1.0 + 0.044_715 * x * x);
    let e = exp_neg(-2.0 * u.abs());
    let num = if u >= 0.0 { x } else { x * e };
    num / (1.0 + e)
}

/// An element-wise GELU kernel dam runs as a ggml custom op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gelu {
    Erf,
    Tanh,
}

impl Gelu {
    /// The kernel over one slice: a fixed function per loop, so each
    /// loop vectorises.
    fn apply(self, x: &[f32], y: &mut [f32]) {
        match self {
            Gelu::Erf => y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu_erf(x)),
            Gelu::Tanh => y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu_tanh(x)),
        }
    }

    /// The node callback for this kernel.
    pub(super) fn op(self) -> ffi::ggml_custom1_op_t {
        match self {
            Gelu::Erf => Some(gelu_erf_op),
            Gelu::Tanh => Some(gelu_tanh_op),
        }
    }
}

/// # Safety
/// As [`unary_op`].
unsafe extern "C" fn gelu_erf_op(
    dst: *mut ffi::ggml_tensor,
    a: *const ffi::ggml_tensor,
    ith: c_int,
    nth: c_int,
    _userdata: *mut c_void,
) {
    // SAFETY: the same contract (ggml calls this with a node of `Graph::unary`).
    unsafe { unary_op(dst, a, ith, nth, Gelu::Erf) }
}

/// # Safety
/// As [`unary_op`].
unsafe extern "C" fn gelu_tanh_op(
    dst: *mut ffi::ggml_tensor,
    a: *const ffi::ggml_tensor,
    ith: c_int,
    nth: c_int,
    _userdata: *mut c_void,
) {
    // SAFETY: the same contract (ggml calls this with a node of `Graph::unary`).
    unsafe { unary_op(dst, a, ith, nth, Gelu::Tanh) }
}

/// The nodes' callback body: thread `ith` of `nth` does its share of the
/// elements of `a` (f32, contiguous, checked when the node was made) into
/// `dst` (the same shape, contiguous: ggml made it from `a`).
///
/// # Safety
/// Called by ggml's CPU backend only, with the tensors of a node made by
/// [`super::Graph::unary`]: both f32, contiguous, with `ne(a)` elements of
/// allocated memory each.
unsafe fn unary_op(
    dst: *mut ffi::ggml_tensor,
    a: *const ffi::ggml_tensor,
    ith: c_int,
    nth: c_int,
    kernel: Gelu,
) {
    // SAFETY: `a` is a valid tensor header (caller's contract).
    let n = unsafe { ffi::ggml_nelements(a) }.max(0) as usize;
    let (start, end) = share(n, ith, nth);
    // SAFETY: valid headers whose data hold `n` f32 each (caller's contract).
    let (src, out) = unsafe { ((*a).data as *const f32, (*dst).data as *mut f32) };
    let len = end - start;
    if len == 0 {
        return;
    }
    // SAFETY: [start, end) lies inside both tensors' n elements, and the
    // threads' ranges are disjoint, so this thread alone touches these
    // elements of `dst`.
    let (x, y) = unsafe { (src.add(start), out.add(start)) };
    let (xa, ya) = (x as usize, y as usize);
    let bytes = len * std::mem::size_of::<f32>();
    if xa + bytes <= ya || ya + bytes <= xa {
        // Separate buffers (ggml never runs a custom op in place).
        // SAFETY: disjoint ranges of allocated f32 (see above).
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts(x, len),
                std::slice::from_raw_parts_mut(y, len),
            )
        };
        kernel.apply(x, y);
    } else {
        // Overlapping: through local chunks, each read before it is written.
        let (mut xs, mut ys) = ([0f32; CHUNK], [0f32; CHUNK]);
        for i in (0..len).step_by(CHUNK) {
            let m = CHUNK.min(len - i);
            // SAFETY: [i, i + m) lies in this thread's range of both tensors.
            unsafe { std::ptr::copy(x.add(i), xs.as_mut_ptr(), m) };
            kernel.apply(&xs[..m], &mut ys[..m]);
            // SAFETY: as above.
            unsafe { std::ptr::copy(ys.as_ptr(), y.add(i), m) };
        }
    }
}

/// One row of [`rel_soft_max_op`]: `out[k_w + s k_h] = softmax(scale *
/// x + rh[k_h] + rw[k_w])` over the `s * s` keys, exp by [`exp_neg`].
fn rel_soft_max_row(x: &[f32], rh: &[f32], rw: &[f32], scale: f32, out: &mut [f32]) {
    let s = rw.len();
    for ((o, x), &h) in out.chunks_exact_mut(s).zip(x.chunks_exact(s)).zip(rh) {
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(rw) {
            *o = x * scale + h + w;
        }
    }
    let max = out.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Eight partial sums, so the loop vectorises.
    let mut sums = [0f32; 8];
    for c in out.chunks_mut(8) {
        for (v, acc) in c.iter_mut().zip(&mut sums) {
            *v = exp_neg(*v - max);
            *acc += *v;
        }
    }
    let inv = 1.0 / sums.iter().sum::<f32>();
    for v in out.iter_mut() {
        *v *= inv;
    }
}

/// The node's callback for [`super::Graph::rel_soft_max`]: `a` scores
/// [s*s, n, m], `b` rel_h [s, n, m], `c` rel_w [s, n, m], `dst` like `a`
/// (all f32, contiguous, checked when the node was made); the scale's bits
/// are the userdata pointer's value. Thread `ith` of `nth` does its share
/// of the n * m rows.
///
/// # Safety
/// Called by ggml's CPU backend only, with the tensors of a node made by
/// `Graph::rel_soft_max` (shapes as above, allocated).
pub(super) unsafe extern "C" fn rel_soft_max_op(
    dst: *mut ffi::ggml_tensor,
    a: *const ffi::ggml_tensor,
    b: *const ffi::ggml_tensor,
    c: *const ffi::ggml_tensor,
    ith: c_int,
    nth: c_int,
    userdata: *mut c_void,
) {
    let scale = f32::from_bits(userdata as usize as u32);
    // SAFETY: valid headers (caller's contract).
    let (ne_a, ne_b) = unsafe { ((*a).ne, (*b).ne) };
    let (keys, side) = (ne_a[0].max(0) as usize, ne_b[0].max(0) as usize);
    let rows = (ne_a[1] * ne_a[2] * ne_a[3]).max(0) as usize;
    let (start, end) = share(rows, ith, nth);
    if start == end || keys != side * side {
        return;
    }
    // SAFETY: f32 data of `rows * keys` (a, dst) and `rows * side` (b, c)
    // elements (caller's contract).
    let (x, rh, rw, out) = unsafe {
        (
            (*a).data as *const f32,
            (*b).data as *const f32,
            (*c).data as *const f32,
            (*dst).data as *mut f32,
        )
    };
    // ggml never runs a custom op in place; were dst over a, each row is
    // copied out before it is written.
    let in_place = std::ptr::eq(x, out);
    let mut copy = if in_place {
        vec![0f32; keys]
    } else {
        Vec::new()
    };
    for r in start..end {
        // SAFETY: row r of each tensor lies inside it (r < rows); this
        // thread alone reads and writes rows [start, end) of dst, and a's
        // row is only borrowed when it is not dst's.
        unsafe {
            let (hr, wr) = (
                std::slice::from_raw_parts(rh.add(r * side), side),
                std::slice::from_raw_parts(rw.add(r * side), side),
            );
            if in_place {
                std::ptr::copy_nonoverlapping(x.add(r * keys), copy.as_mut_ptr(), keys);
            }
            let xr: &[f32] = if in_place {
                &copy
            } else {
                std::slice::from_raw_parts(x.add(r * keys), keys)
            };
            let or = std::slice::from_raw_parts_mut(out.add(r * keys), keys);
            rel_soft_max_row(xr, hr, wr, scale, or);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (|x| < 3) or the continued fraction
    /// of erfc (beyond): a reference independent of the code under test.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut k) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        v.copysign(x)
    }

    /// `f` within 4e-7 of `exact` over [-12, 12] (relative, absolute below
    /// 1), at the edge cases `(x, f(x))`, and NaN for NaN.
    fn check_gelu(f: fn(f32) -> f32, exact: impl Fn(f64) -> f64, edges: &[(f32, f32)]) {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let e = exact(x as f64);
            worst = worst.max((f(x) as f64 - e).abs() / e.abs().max(1.0));
            x += 1.0 / 1024.0;
        }
        assert!(worst < 4e-7, "worst error {worst:e}");
        for &(x, e) in edges {
            let y = f(x);
            // A far negative tail may underflow to ~1e-36 instead of 0.
            assert!(
                y == e || (y - e).abs() <= e.abs() * 1e-6 + 1e-30,
                "gelu({x}) = {y}"
            );
        }
        assert!(f(f32::NAN).is_nan());
    }

    /// Far tails are x and 0; near 0 the slope is 1/2.
    const TAILS: [(f32, f32); 6] = [
        (0.0, 0.0),
        (1e-30, 5e-31),
        (-1e-30, -5e-31),
        (100.0, 100.0),
        (-100.0, 0.0),
        (f32::MAX, f32::MAX),
    ];

    #[test]
    fn gelu_erf_matches_the_exact_function() {
        let exact = |x: f64| 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
        check_gelu(gelu_erf, exact, &TAILS);
        check_gelu(gelu_erf, exact, &[(f32::MIN, 0.0)]);
    }

    #[test]
    fn gelu_tanh_matches_the_exact_function() {
        let exact = |x: f64| {
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + u.tanh())
        };
        check_gelu(gelu_tanh, exact, &TAILS);
        check_gelu(gelu_tanh, exact, &[(f32::INFINITY, f32::INFINITY)]);
    }

    #[test]
    fn kernels_over_slices_equal_the_scalar_functions() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        for (k, f) in [
            (Gelu::Erf, gelu_erf as fn(f32) -> f32),
            (Gelu::Tanh, gelu_tanh),
        ] {
            let mut y = vec![0f32; x.len()];
            k.apply(&x, &mut y);
            assert!(y
                .iter()
                .zip(&x)
                .all(|(y, &x)| y.to_bits() == f(x).to_bits()));
        }
    }

    #[test]
    fn rel_soft_max_row_is_the_softmax_of_the_biased_scores() {
        let s = 5;
        let x: Vec<f32> = (0..s * s)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
            .collect();
        let rh: Vec<f32> = (0..s).map(|i| i as f32 * 0.3 - 0.5).collect();
        let rw: Vec<f32> = (0..s).map(|i| 1.0 - i as f32 * 0.45).collect();
        let mut out = vec![0f32; s * s];
        rel_soft_max_row(&x, &rh, &rw, 0.125, &mut out);
        let v: Vec<f64> = (0..s * s)
            .map(|k| x[k] as f64 * 0.125 + rh[k / s] as f64 + rw[k % s] as f64)
            .collect();
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = v.iter().map(|v| (v - max).exp()).sum();
        for (k, &o) in out.iter().enumerate() {
            let want = (v[k] - max).exp() / sum;
            assert!(
                (o as f64 - want).abs() < 1e-6 * want.max(1e-3),
                "{k}: {o} vs {want}"
            );
        }
    }

    #[test]
    fn exp_neg_is_accurate() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let e = (x as f64).exp();
            let rel = (exp_neg(x) as f64 - e).abs() / e;
            assert!(rel < 3e-7, "exp({x}): {rel:e}");
            x += 1.0 / 256.0;
        }
    }
}
