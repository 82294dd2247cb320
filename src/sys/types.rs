//! ggml tensor types that dam reads, writes and quantizes, and the
//! quantization entry point.

use super::ffi;
use crate::error::{Error, Result};

/// The ggml tensor types dam knows. Values are ggml's own enum values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
}

const ALL: [GgmlType; 14] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
];

impl GgmlType {
    pub fn raw(self) -> u32 {
        match self {
            GgmlType::F32 => ffi::GGML_TYPE_F32,
            GgmlType::F16 => ffi::GGML_TYPE_F16,
            GgmlType::BF16 => ffi::GGML_TYPE_BF16,
            GgmlType::Q4_0 => ffi::GGML_TYPE_Q4_0,
            GgmlType::Q4_1 => ffi::GGML_TYPE_Q4_1,
            GgmlType::Q5_0 => ffi::GGML_TYPE_Q5_0,
            GgmlType::Q5_1 => ffi::GGML_TYPE_Q5_1,
            GgmlType::Q8_0 => ffi::GGML_TYPE_Q8_0,
            GgmlType::Q2_K => ffi::GGML_TYPE_Q2_K,
            GgmlType::Q3_K => ffi::GGML_TYPE_Q3_K,
            GgmlType::Q4_K => ffi::GGML_TYPE_Q4_K,
            GgmlType::Q5_K => ffi::GGML_TYPE_Q5_K,
            GgmlType::Q6_K => ffi::GGML_TYPE_Q6_K,
            GgmlType::IQ4_NL => ffi::GGML_TYPE_IQ4_NL,
        }
    }

    /// The type for a raw ggml enum value, if dam supports it.
    pub fn from_raw(raw: u32) -> Option<Self> {
        ALL.iter().copied().find(|t| t.raw() == raw)
    }

    /// Lower-case name as used on the command line and in file names (`q4_k`).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::BF16 => "bf16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q2_K => "q2_k",
            GgmlType::Q3_K => "q3_k",
            GgmlType::Q4_K => "q4_k",
            GgmlType::Q5_K => "q5_k",
            GgmlType::Q6_K => "q6_k",
            GgmlType::IQ4_NL => "iq4_nl",
        }
    }

    /// Parses a name such as `q8_0` or `Q4_K` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        let l = s.to_ascii_lowercase();
        ALL.iter().copied().find(|t| t.name() == l).ok_or_else(|| {
            let names: Vec<_> = ALL.iter().map(|t| t.name()).collect();
            Error::InvalidArgument(format!("unknown type '{s}' (one of {})", names.join(", ")))
        })
    }

    /// Elements per block (1 for float types). A Rust table (equal to
    /// ggml's, see the tests) so that validating a file never calls C.
    pub fn block_size(self) -> usize {
        self.layout().0
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.layout().1
    }

    /// (elements, bytes) per block, as in ggml's type traits.
    fn layout(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 | GgmlType::IQ4_NL => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
        }
    }

    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// Bytes of one row of `ne0` elements, or None if `ne0` is not a multiple
    /// of the block size (or overflows).
    pub fn row_size(self, ne0: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if ne0 % bs != 0 {
            return None;
        }
        (ne0 / bs).checked_mul(self.type_size() as u64)
    }

    /// Bytes of a tensor of this type and shape (ggml order, `ne[0]` first).
    pub fn nbytes(self, ne: &[u64]) -> Option<u64> {
        let first = *ne.first()?;
        let mut n = self.row_size(first)?;
        for &d in &ne[1..] {
            n = n.checked_mul(d)?;
        }
        Some(n)
    }

    /// As [`fallback_for_row`](Self::fallback_for_row), but a 4-bit k-quant
    /// falls back to q4_0 rather than llama.cpp's q5_0: ggml's CPU backend
    /// repacks q4_0 (and q8_0) for AVX2 / AVX-512 / AMX / NEON, not q5_0.
    /// The vision tower's 1152-wide rows do not fit 256-blocks, and their q5_0
    /// kept the "q4_k" vision file (the larger one) 1.5x slower than q4_0
    /// (benches/RESULTS.md). The LLM keeps llama.cpp's table, so that dam's and
    /// llama.cpp's own quantizations of it agree.
    pub fn repackable_fallback_for_row(self, ne0: u64) -> GgmlType {
        match self {
            GgmlType::Q4_K if self.row_size(ne0).is_none() => GgmlType::Q4_0.fallback_for_row(ne0),
            _ => self.fallback_for_row(ne0),
        }
    }

    /// The type llama.cpp falls back to when rows of `ne0` elements do not fit
    /// this type's block size: k-quants to the nearest legacy quant, legacy
    /// quants to f16 (which always fits).
    pub fn fallback_for_row(self, ne0: u64) -> GgmlType {
        let mut t = self;
        loop {
            if t.row_size(ne0).is_some() {
                return t;
            }
            t = match t {
                GgmlType::Q2_K | GgmlType::Q3_K => GgmlType::IQ4_NL,
                GgmlType::Q4_K => GgmlType::Q5_0,
                GgmlType::Q5_K => GgmlType::Q5_1,
                GgmlType::Q6_K => GgmlType::Q8_0,
                _ => GgmlType::F16,
            };
        }
    }
}

/// Converts `src` (rows of `n_per_row` f32 values) to `ty` with ggml's own
/// quantizers / converters.
pub fn quantize(ty: GgmlType, src: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    if n_per_row == 0 || src.len() % n_per_row != 0 {
        return Err(Error::InvalidArgument(format!(
            "quantize: {} values are not whole rows of {n_per_row}",
            src.len()
        )));
    }
    let row = ty.row_size(n_per_row as u64).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "quantize: rows of {n_per_row} do not fit {} blocks of {}",
            ty.name(),
            ty.block_size()
        ))
    })? as usize;
    let nrows = src.len() / n_per_row;
    if ty == GgmlType::F32 {
        return Ok(src.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    // SAFETY: reads ggml's static quantization traits table.
    if unsafe { ffi::ggml_quantize_requires_imatrix(ty.raw()) } {
        return Err(Error::InvalidArgument(format!(
            "{} needs an importance matrix",
            ty.name()
        )));
    }
    let mut dst = vec![0u8; row * nrows];
    // SAFETY: `src` holds nrows*n_per_row f32 values, `dst` holds exactly
    // nrows rows of `row` bytes of type `ty`, n_per_row is a multiple of the
    // block size (checked above), and no importance matrix is needed.
    let written = unsafe {
        ffi::ggml_quantize_chunk(
            ty.raw(),
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            nrows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    if written != dst.len() {
        return Err(Error::Backend(format!(
            "quantize to {} wrote {written} bytes, expected {}",
            ty.name(),
            dst.len()
        )));
    }
    Ok(dst)
}

/// Converts rows of type `ty` back to f32 with ggml's type traits.
pub fn dequantize(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>> {
    let need = ty
        .nbytes(&[n as u64])
        .ok_or_else(|| Error::InvalidArgument("dequantize: bad element count".into()))?;
    if src.len() as u64 != need {
        return Err(Error::InvalidArgument(format!(
            "dequantize: {} bytes given, {need} needed",
            src.len()
        )));
    }
    if ty == GgmlType::F32 {
        // ggml has no to_float for f32 (it is already float).
        return Ok(src
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    let mut out = vec![0f32; n];
    // SAFETY: the traits table is static; `to_float` for a supported type reads
    // exactly `need` bytes from `src` and writes `n` floats into `out`.
    unsafe {
        let traits = ffi::ggml_get_type_traits(ty.raw());
        let f = (*traits)
            .to_float
            .ok_or_else(|| Error::Backend(format!("no to_float for {}", ty.name())))?;
        f(src.as_ptr().cast(), out.as_mut_ptr(), n as i64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_matches_ggml() {
        for t in ALL {
            // SAFETY: ggml_blck_size / ggml_type_size only read ggml's static
            // type table; `raw()` is a valid index into it.
            let (bs, ts) = unsafe { (ffi::ggml_blck_size(t.raw()), ffi::ggml_type_size(t.raw())) };
            assert_eq!(
                (t.block_size(), t.type_size()),
                (bs as usize, ts),
                "{}",
                t.name()
            );
        }
    }

    #[test]
    fn sizes_and_fallbacks() {
        assert_eq!(GgmlType::Q8_0.block_size(), 32);
        assert_eq!(GgmlType::Q4_K.block_size(), 256);
        assert_eq!(GgmlType::F16.row_size(3), Some(6));
        assert_eq!(GgmlType::Q8_0.row_size(48), None);
        // SigLIP-so400m: 1152 is not a multiple of 256, 4304 not of 32.
        assert_eq!(GgmlType::Q4_K.fallback_for_row(1152), GgmlType::Q5_0);
        assert_eq!(GgmlType::Q6_K.fallback_for_row(1152), GgmlType::Q8_0);
        assert_eq!(GgmlType::Q8_0.fallback_for_row(4304), GgmlType::F16);
        assert_eq!(GgmlType::Q4_K.fallback_for_row(2560), GgmlType::Q4_K);
        assert_eq!(
            GgmlType::Q4_K.repackable_fallback_for_row(1152),
            GgmlType::Q4_0
        );
        assert_eq!(
            GgmlType::Q4_K.repackable_fallback_for_row(4352),
            GgmlType::Q4_K
        );
        assert_eq!(
            GgmlType::Q4_K.repackable_fallback_for_row(48),
            GgmlType::F16
        );
        assert_eq!(
            GgmlType::Q6_K.repackable_fallback_for_row(1152),
            GgmlType::Q8_0
        );
    }

    #[test]
    fn quantize_roundtrip() {
        let src: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        for ty in [
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::BF16,
            GgmlType::Q4_0,
        ] {
            let q = quantize(ty, &src, 32).unwrap();
            let back = dequantize(ty, &q, 64).unwrap();
            let err = src
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 0.2, "{ty:?} err {err}");
        }
        assert!(quantize(GgmlType::Q8_0, &src, 16).is_err());
    }
}
