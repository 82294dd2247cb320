//! What the unit tests share: deterministic pseudo-random data, without a
//! dependency.

/// A xorshift64 stream, the same for the same seed (0 counts as 1).
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.max(1);
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// `n` pseudo-random bytes of the [`xorshift`] stream of `seed`.
pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut r = xorshift(seed);
    (0..n).map(|_| (r() >> 24) as u8).collect()
}
