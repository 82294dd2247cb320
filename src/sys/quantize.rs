//! A safe wrapper of llama.cpp's own model quantizer (`llama_model_quantize`),
//! used for the LLM file so that it gets llama.cpp's per-tensor type mixtures
//! (Q4_K_M, ...) exactly as `llama-quantize` would produce them.

use std::ffi::CString;
use std::path::Path;

use super::ffi;
use super::types::GgmlType;
use crate::error::{Error, Result};

/// llama.cpp's `llama_ftype` for a requested weight type: the "mostly X"
/// file type, with the medium mixture for the k-quants that have several
/// (q3_k -> Q3_K_M, q4_k -> Q4_K_M, q5_k -> Q5_K_M).
pub fn llama_ftype(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => ffi::LLAMA_FTYPE_ALL_F32,
        GgmlType::F16 => ffi::LLAMA_FTYPE_MOSTLY_F16,
        GgmlType::BF16 => ffi::LLAMA_FTYPE_MOSTLY_BF16,
        GgmlType::Q4_0 => ffi::LLAMA_FTYPE_MOSTLY_Q4_0,
        GgmlType::Q4_1 => ffi::LLAMA_FTYPE_MOSTLY_Q4_1,
        GgmlType::Q5_0 => ffi::LLAMA_FTYPE_MOSTLY_Q5_0,
        GgmlType::Q5_1 => ffi::LLAMA_FTYPE_MOSTLY_Q5_1,
        GgmlType::Q8_0 => ffi::LLAMA_FTYPE_MOSTLY_Q8_0,
        GgmlType::Q2_K => ffi::LLAMA_FTYPE_MOSTLY_Q2_K,
        GgmlType::Q3_K => ffi::LLAMA_FTYPE_MOSTLY_Q3_K_M,
        GgmlType::Q4_K => ffi::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        GgmlType::Q5_K => ffi::LLAMA_FTYPE_MOSTLY_Q5_K_M,
        GgmlType::Q6_K => ffi::LLAMA_FTYPE_MOSTLY_Q6_K,
        GgmlType::IQ4_NL => ffi::LLAMA_FTYPE_MOSTLY_IQ4_NL,
    }
}

fn path_cstr(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path with NUL byte: {}", p.display())))
}

/// Runs `llama_model_quantize(input, output)` to llama file type `ftype`
/// with `threads` threads (0 = all cores). Already-quantized tensors are
/// dequantized and requantized (`allow_requantize`).
///
/// The caller must have validated `input` (a readable llama GGUF: see
/// `GgufHeader::parse`): llama.cpp reports loader errors as a non-zero
/// return code, but its asserts abort on files it does not expect.
pub fn llama_model_quantize(input: &Path, output: &Path, ftype: u32, threads: usize) -> Result<()> {
    let (inp, out) = (path_cstr(input)?, path_cstr(output)?);
    super::llama::init_backend();
    // SAFETY: returns a plain struct by value.
    let mut params = unsafe { ffi::llama_model_quantize_default_params() };
    params.nthread = i32::try_from(threads).unwrap_or(0);
    params.ftype = ftype;
    params.allow_requantize = true;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the
    // call, `params` is a fully initialised struct from the default
    // constructor with null imatrix/override pointers, and llama.cpp catches
    // its own exceptions and returns a status code.
    let rc = unsafe { ffi::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc != 0 {
        return Err(Error::Backend(format!(
            "llama_model_quantize({} -> {}) failed with code {rc}",
            input.display(),
            output.display()
        )));
    }
    Ok(())
}
