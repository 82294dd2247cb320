//! dam's own CPU ops, run by ggml as custom-op nodes.
//!
//! GELU with erf: ggml's CPU kernel calls libm's scalar `erff` per element,
//! which took ~13% of MobileSAM's encoder and most of SAM's mask upscaling.
//! Here erf is the Abramowitz & Stegun 7.1.26 formula (absolute error
//! <= 1.5e-7), the one PyTorch's vectorised CPU `erf` uses, with an exp that
//! the compiler vectorises; the arithmetic is plain f32 over fixed chunks.

use std::os::raw::{c_int, c_void};

use super::ffi;

/// Elements per chunk when input and output overlap.
const CHUNK: usize = 256;

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

/// GELU (erf form), element-wise.
fn gelu_erf_slice(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = gelu_erf(x);
    }
}

/// The node's callback: thread `ith` of `nth` does its share of the
/// elements of `a` (f32, contiguous, checked when the node was made) into
/// `dst` (the same shape, contiguous: ggml made it from `a`).
///
/// # Safety
/// Called by ggml's CPU backend only, with the tensors of a node made by
/// [`super::Graph::unary`]: both f32, contiguous, with `ne(a)` elements of
/// allocated memory each.
pub(super) unsafe extern "C" fn gelu_erf_op(
    dst: *mut ffi::ggml_tensor,
    a: *const ffi::ggml_tensor,
    ith: c_int,
    nth: c_int,
    _userdata: *mut c_void,
) {
    // SAFETY: `a` is a valid tensor header (caller's contract).
    let n = unsafe { ffi::ggml_nelements(a) }.max(0) as usize;
    let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
    let per = n.div_ceil(nth);
    let (start, end) = ((ith * per).min(n), ((ith + 1) * per).min(n));
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
        gelu_erf_slice(x, y);
    } else {
        // Overlapping: through local chunks, each read before it is written.
        let (mut xs, mut ys) = ([0f32; CHUNK], [0f32; CHUNK]);
        for i in (0..len).step_by(CHUNK) {
            let m = CHUNK.min(len - i);
            // SAFETY: [i, i + m) lies in this thread's range of both tensors.
            unsafe { std::ptr::copy(x.add(i), xs.as_mut_ptr(), m) };
            gelu_erf_slice(&xs[..m], &mut ys[..m]);
            // SAFETY: as above.
            unsafe { std::ptr::copy(ys.as_ptr(), y.add(i), m) };
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

    #[test]
    fn gelu_erf_matches_the_exact_function() {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let exact = 0.5 * x as f64 * (1.0 + erf64(x as f64 / std::f64::consts::SQRT_2));
            let err = (gelu_erf(x) as f64 - exact).abs() / exact.abs().max(1.0);
            worst = worst.max(err);
            x += 1.0 / 1024.0;
        }
        assert!(worst < 4e-7, "worst error {worst:e}");
        // Far tails are x and 0; near 0 the slope is 1/2.
        for (x, exact) in [
            (0.0f32, 0.0f32),
            (1e-30, 5e-31),
            (-1e-30, -5e-31),
            (100.0, 100.0),
            (-100.0, 0.0),
            (f32::MAX, f32::MAX),
            (f32::MIN, 0.0),
        ] {
            let y = gelu_erf(x);
            assert!((y - exact).abs() <= exact.abs() * 1e-6, "gelu({x}) = {y}");
        }
        assert!(gelu_erf(f32::NAN).is_nan());
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
