//! Writing GGUF files with ggml's own gguf API, streaming tensor data.
//!
//! gguf's C API builds the header (key/values and the tensor table) in memory;
//! we write that header, then append each tensor's bytes in table order,
//! padded to the alignment, so the whole model never sits in memory.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use super::ffi;
use super::types::GgmlType;
use crate::error::{Error, Result};

const ALIGNMENT: u64 = 32; // GGUF_DEFAULT_ALIGNMENT

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("string with NUL byte: {s:?}")))
}

/// A planned tensor: name, type and ggml shape (ne[0] = row length).
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
    pub nbytes: u64,
}

/// Collects key/values and the tensor table of a GGUF file.
pub struct GgufWriter {
    ctx: *mut ffi::gguf_context,
    // Holds the metadata-only ggml tensors that `gguf_add_tensor` copies.
    meta: *mut ffi::ggml_context,
    meta_cap: usize,
    tensors: Vec<PlannedTensor>,
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        // SAFETY: both pointers come from their init functions, are non-null
        // (checked in `with_capacity`) and are freed exactly once here.
        unsafe {
            ffi::gguf_free(self.ctx);
            ffi::ggml_free(self.meta);
        }
    }
}

impl GgufWriter {
    /// A writer for at most `max_tensors` tensors.
    pub fn with_capacity(max_tensors: usize) -> Result<Self> {
        // SAFETY: plain constructors; a null result is handled below.
        let ctx = unsafe { ffi::gguf_init_empty() };
        let params = ffi::ggml_init_params {
            // SAFETY: pure function of its argument.
            mem_size: (max_tensors + 1) * unsafe { ffi::ggml_tensor_overhead() },
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // SAFETY: no_alloc context for tensor metadata only.
        let meta = unsafe { ffi::ggml_init(params) };
        if ctx.is_null() || meta.is_null() {
            return Err(Error::Backend("gguf/ggml init failed".into()));
        }
        Ok(GgufWriter {
            ctx,
            meta,
            meta_cap: max_tensors,
            tensors: Vec::new(),
        })
    }

    pub fn set_str(&mut self, key: &str, v: &str) -> Result<()> {
        let (k, v) = (cstr(key)?, cstr(v)?);
        // SAFETY: ctx is valid; gguf copies both strings.
        unsafe { ffi::gguf_set_val_str(self.ctx, k.as_ptr(), v.as_ptr()) };
        Ok(())
    }
    pub fn set_u32(&mut self, key: &str, v: u32) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: ctx is valid; gguf copies the key.
        unsafe { ffi::gguf_set_val_u32(self.ctx, k.as_ptr(), v) };
        Ok(())
    }
    pub fn set_i32(&mut self, key: &str, v: i32) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: as in set_u32.
        unsafe { ffi::gguf_set_val_i32(self.ctx, k.as_ptr(), v) };
        Ok(())
    }
    pub fn set_f32(&mut self, key: &str, v: f32) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: as in set_u32.
        unsafe { ffi::gguf_set_val_f32(self.ctx, k.as_ptr(), v) };
        Ok(())
    }
    pub fn set_bool(&mut self, key: &str, v: bool) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: as in set_u32.
        unsafe { ffi::gguf_set_val_bool(self.ctx, k.as_ptr(), v) };
        Ok(())
    }
    pub fn set_arr_f32(&mut self, key: &str, v: &[f32]) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: `v` holds v.len() f32 values; gguf copies them.
        unsafe {
            ffi::gguf_set_arr_data(
                self.ctx,
                k.as_ptr(),
                ffi::GGUF_TYPE_FLOAT32,
                v.as_ptr().cast(),
                v.len(),
            )
        };
        Ok(())
    }
    pub fn set_arr_i32(&mut self, key: &str, v: &[i32]) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: `v` holds v.len() i32 values; gguf copies them.
        unsafe {
            ffi::gguf_set_arr_data(
                self.ctx,
                k.as_ptr(),
                ffi::GGUF_TYPE_INT32,
                v.as_ptr().cast(),
                v.len(),
            )
        };
        Ok(())
    }
    pub fn set_arr_str(&mut self, key: &str, v: &[String]) -> Result<()> {
        let k = cstr(key)?;
        let owned: Vec<CString> = v.iter().map(|s| cstr(s)).collect::<Result<_>>()?;
        let ptrs: Vec<*const std::os::raw::c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        // SAFETY: `ptrs` holds v.len() valid NUL-terminated strings that live
        // until after the call; gguf copies them.
        unsafe { ffi::gguf_set_arr_str(self.ctx, k.as_ptr(), ptrs.as_ptr() as *mut _, ptrs.len()) };
        Ok(())
    }

    /// Sets a key from a parsed value (used to copy the keys of one GGUF file
    /// into another). Arrays must be homogeneous and not nested; an empty
    /// array is written as an empty i32 array (the reader does not keep the
    /// element type of empty arrays).
    pub fn set_value(&mut self, key: &str, v: &crate::gguf_file::Value) -> Result<()> {
        use crate::gguf_file::Value as V;
        let k = cstr(key)?;
        match v {
            V::Str(s) => return self.set_str(key, s),
            V::Array(items) => return self.set_array(key, items),
            _ => {}
        }
        // SAFETY: ctx is valid; gguf copies the key; each call passes a plain value.
        unsafe {
            match *v {
                V::U8(x) => ffi::gguf_set_val_u8(self.ctx, k.as_ptr(), x),
                V::I8(x) => ffi::gguf_set_val_i8(self.ctx, k.as_ptr(), x),
                V::U16(x) => ffi::gguf_set_val_u16(self.ctx, k.as_ptr(), x),
                V::I16(x) => ffi::gguf_set_val_i16(self.ctx, k.as_ptr(), x),
                V::U32(x) => ffi::gguf_set_val_u32(self.ctx, k.as_ptr(), x),
                V::I32(x) => ffi::gguf_set_val_i32(self.ctx, k.as_ptr(), x),
                V::F32(x) => ffi::gguf_set_val_f32(self.ctx, k.as_ptr(), x),
                V::Bool(x) => ffi::gguf_set_val_bool(self.ctx, k.as_ptr(), x),
                V::U64(x) => ffi::gguf_set_val_u64(self.ctx, k.as_ptr(), x),
                V::I64(x) => ffi::gguf_set_val_i64(self.ctx, k.as_ptr(), x),
                V::F64(x) => ffi::gguf_set_val_f64(self.ctx, k.as_ptr(), x),
                V::Str(_) | V::Array(_) => {}
            }
        }
        Ok(())
    }

    fn set_array(&mut self, key: &str, items: &[crate::gguf_file::Value]) -> Result<()> {
        use crate::gguf_file::Value as V;
        let Some(first) = items.first() else {
            return self.set_arr_i32(key, &[]);
        };
        if let V::Str(_) = first {
            let strs: Vec<String> = items
                .iter()
                .map(|x| match x {
                    V::Str(s) => Ok(s.clone()),
                    _ => Err(Error::InvalidArgument(format!("key {key}: mixed array"))),
                })
                .collect::<Result<_>>()?;
            return self.set_arr_str(key, &strs);
        }
        let ty = match first {
            V::U8(_) => ffi::GGUF_TYPE_UINT8,
            V::I8(_) => ffi::GGUF_TYPE_INT8,
            V::U16(_) => ffi::GGUF_TYPE_UINT16,
            V::I16(_) => ffi::GGUF_TYPE_INT16,
            V::U32(_) => ffi::GGUF_TYPE_UINT32,
            V::I32(_) => ffi::GGUF_TYPE_INT32,
            V::F32(_) => ffi::GGUF_TYPE_FLOAT32,
            V::Bool(_) => ffi::GGUF_TYPE_BOOL,
            V::U64(_) => ffi::GGUF_TYPE_UINT64,
            V::I64(_) => ffi::GGUF_TYPE_INT64,
            V::F64(_) => ffi::GGUF_TYPE_FLOAT64,
            V::Str(_) | V::Array(_) => {
                return Err(Error::InvalidArgument(format!(
                    "key {key}: nested arrays are not supported"
                )))
            }
        };
        // Little-endian packing, as GGUF stores it (ggml only runs on LE hosts).
        let mut bytes: Vec<u8> = Vec::new();
        for x in items {
            let same = std::mem::discriminant(x) == std::mem::discriminant(first);
            if !same {
                return Err(Error::InvalidArgument(format!("key {key}: mixed array")));
            }
            match *x {
                V::U8(a) => bytes.push(a),
                V::I8(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::U16(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::I16(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::U32(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::I32(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::F32(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::Bool(a) => bytes.push(a as u8),
                V::U64(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::I64(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::F64(a) => bytes.extend_from_slice(&a.to_le_bytes()),
                V::Str(_) | V::Array(_) => {}
            }
        }
        let k = cstr(key)?;
        // SAFETY: `bytes` holds items.len() packed elements of type `ty`
        // (every element has the first one's variant, checked above); gguf
        // copies items.len() * sizeof(ty) bytes.
        unsafe {
            ffi::gguf_set_arr_data(self.ctx, k.as_ptr(), ty, bytes.as_ptr().cast(), items.len())
        };
        Ok(())
    }

    /// Adds a tensor to the table. `ne` is in ggml order (row length first).
    pub fn add_tensor(&mut self, name: &str, ty: GgmlType, ne: &[u64]) -> Result<()> {
        if ne.is_empty() || ne.len() > 4 {
            return Err(Error::InvalidArgument(format!("{name}: {} dims", ne.len())));
        }
        if name.len() >= 64 {
            return Err(Error::InvalidArgument(format!(
                "tensor name too long: {name}"
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::InvalidArgument(format!("duplicate tensor {name}")));
        }
        if self.tensors.len() >= self.meta_cap {
            return Err(Error::InvalidArgument(
                "too many tensors for this writer".into(),
            ));
        }
        let nbytes = ty.nbytes(ne).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{name}: shape {ne:?} does not fit type {}",
                ty.name()
            ))
        })?;
        let ne_i: Vec<i64> = ne.iter().map(|&d| d as i64).collect();
        let cname = cstr(name)?;
        // SAFETY: meta is a no_alloc context with room for meta_cap tensors
        // (checked above); ne_i holds ne.len() <= 4 dims and the row length is
        // a multiple of the block size (nbytes succeeded), which ggml asserts.
        // The name is unique, which gguf_add_tensor asserts.
        unsafe {
            let t = ffi::ggml_new_tensor(self.meta, ty.raw(), ne_i.len() as i32, ne_i.as_ptr());
            if t.is_null() {
                return Err(Error::Backend("ggml_new_tensor failed".into()));
            }
            ffi::ggml_set_name(t, cname.as_ptr());
            ffi::gguf_add_tensor(self.ctx, t);
        }
        self.tensors.push(PlannedTensor {
            name: name.to_string(),
            ty,
            ne: ne.to_vec(),
            nbytes,
        });
        Ok(())
    }

    pub fn tensors(&self) -> &[PlannedTensor] {
        &self.tensors
    }

    /// Writes the header to `path` and returns a writer for the tensor data.
    pub fn begin(self, path: &Path) -> Result<GgufDataWriter> {
        // SAFETY: ctx is valid; the buffer has exactly gguf_get_meta_size bytes.
        let meta = unsafe {
            let n = ffi::gguf_get_meta_size(self.ctx);
            let mut buf = vec![0u8; n];
            ffi::gguf_get_meta_data(self.ctx, buf.as_mut_ptr().cast());
            buf
        };
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&meta).map_err(|e| Error::io(path, e))?;
        Ok(GgufDataWriter {
            out,
            path: path.to_path_buf(),
            tensors: self.tensors.clone(),
            next: 0,
            header: meta.len() as u64,
        })
    }
}

/// Appends tensor data in table order.
pub struct GgufDataWriter {
    out: BufWriter<File>,
    path: PathBuf,
    tensors: Vec<PlannedTensor>,
    next: usize,
    header: u64,
}

impl GgufDataWriter {
    /// The tensor whose bytes come next, if any.
    pub fn next_tensor(&self) -> Option<&PlannedTensor> {
        self.tensors.get(self.next)
    }

    /// Writes the bytes of the next tensor (must match its planned size).
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let t = self
            .tensors
            .get(self.next)
            .ok_or_else(|| Error::InvalidArgument(format!("{name}: no tensor left to write")))?;
        if t.name != name || t.nbytes != data.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "expected {} ({} bytes), got {name} ({} bytes)",
                t.name,
                t.nbytes,
                data.len()
            )));
        }
        let pad = (ALIGNMENT - data.len() as u64 % ALIGNMENT) % ALIGNMENT;
        let p = &self.path;
        self.out.write_all(data).map_err(|e| Error::io(p, e))?;
        self.out
            .write_all(&[0u8; ALIGNMENT as usize][..pad as usize])
            .map_err(|e| Error::io(p, e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written and flushes; returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        if self.next != self.tensors.len() {
            return Err(Error::InvalidArgument(format!(
                "{} of {} tensors written",
                self.next,
                self.tensors.len()
            )));
        }
        let p = self.path.clone();
        self.out.flush().map_err(|e| Error::io(&p, e))?;
        let size = self.out.stream_position().map_err(|e| Error::io(&p, e))?;
        debug_assert!(size >= self.header);
        Ok(size)
    }
}
