//! A strict, bounds-checked reader of GGUF headers (key/values and the tensor
//! table). It validates a file before ggml or llama.cpp ever sees it: every
//! count, length, shape, type and offset is checked against the file size, so
//! a truncated or hostile file gives an error instead of an abort.
//! Tensor data is not copied: callers get offsets into the mapped file.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::sys::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: usize = 4;
const MAX_STRING: u64 = 1 << 24;
const MAX_ARRAY: u64 = 1 << 24;
const MAX_COUNT: u64 = 1 << 20;

/// A GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Vec<Value>),
}

impl Value {
    /// Any integer type that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Value::U8(v) => v as i64,
            Value::I8(v) => v as i64,
            Value::U16(v) => v as i64,
            Value::I16(v) => v as i64,
            Value::U32(v) => v as i64,
            Value::I32(v) => v as i64,
            Value::U64(v) => i64::try_from(v).ok()?,
            Value::I64(v) => v,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `ne[0]` is the row length.
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub nbytes: u64,
}

/// The parsed header of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub kv: HashMap<String, Value>,
    /// Keys in file order.
    pub keys: Vec<String>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::InvalidModel(format!("{}: {msg} (at byte {})", self.what, self.pos))
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(format!("truncated inside {what}")));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return Err(self.err(format!("{what}: string length {n} is absurd")));
        }
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.err(format!("{what}: string is not UTF-8")))
    }
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => match self.arr::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: bool value {b}"))),
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth > 0 {
                    return Err(self.err(format!("{what}: nested arrays are not supported")));
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                if n > MAX_ARRAY {
                    return Err(self.err(format!("{what}: array length {n} is absurd")));
                }
                // Every element takes at least one byte: a cheap bound before allocating.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(self.err(format!(
                        "{what}: array of {n} runs past the end of the file"
                    )));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            t => return Err(self.err(format!("{what}: unknown value type {t}"))),
        })
    }
}

impl GgufHeader {
    /// Parses and validates the header of `buf`, the whole file's bytes
    /// (normally a memory mapping). `what` names the file in errors.
    ///
    /// Long (~125 lines) on purpose: one pass in the file's own order
    /// (magic, counts, keys, tensor infos, alignment, data bounds), each field
    /// checked where it is read, so the checks read as the format does.
    pub fn parse(buf: &[u8], what: &str) -> Result<GgufHeader> {
        let mut c = Cursor { buf, pos: 0, what };
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(c.err("not a GGUF file (bad magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "unsupported GGUF version {version} (2 or 3 expected)"
            )));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("key/value count")?;
        if n_tensors > MAX_COUNT || n_kv > MAX_COUNT {
            return Err(c.err(format!("absurd counts: {n_tensors} tensors, {n_kv} keys")));
        }
        let mut kv = HashMap::new();
        let mut keys = Vec::new();
        for _ in 0..n_kv {
            let key = c.string("key")?;
            // ggml looks keys and tensor names up as C strings: "a\0b"
            // would shadow "a" for llama.cpp but not for this reader.
            if key.contains('\0') {
                return Err(c.err(format!("key {key:?} contains a NUL byte")));
            }
            let ty = c.u32("value type")?;
            let v = c.value(ty, &key, 0)?;
            if kv.insert(key.clone(), v).is_some() {
                return Err(c.err(format!("duplicate key {key}")));
            }
            keys.push(key);
        }
        let alignment = match kv.get("general.alignment") {
            None => 32,
            Some(Value::U32(a)) if a.is_power_of_two() => *a as u64,
            Some(v) => return Err(c.err(format!("bad general.alignment {v:?}"))),
        };
        let mut tensors = Vec::with_capacity(n_tensors.min(4096) as usize);
        let mut names = std::collections::HashSet::new();
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            if name.len() >= 64 {
                return Err(c.err(format!("tensor name too long: {name}")));
            }
            if name.contains('\0') {
                return Err(c.err(format!("tensor name {name:?} contains a NUL byte")));
            }
            let n_dims = c.u32("tensor dims")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!("{name}: {n_dims} dimensions")));
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64("tensor shape")?;
                if d == 0 || d > i64::MAX as u64 {
                    return Err(c.err(format!("{name}: dimension {d}")));
                }
                ne.push(d);
            }
            let raw_ty = c.u32("tensor type")?;
            let ty = GgmlType::from_raw(raw_ty)
                .ok_or_else(|| c.err(format!("{name}: unsupported ggml type {raw_ty}")))?;
            let nbytes = ty.nbytes(&ne).ok_or_else(|| {
                c.err(format!(
                    "{name}: shape {ne:?} overflows or does not fit type {}",
                    ty.name()
                ))
            })?;
            let offset = c.u64("tensor offset")?;
            if offset % alignment != 0 {
                return Err(c.err(format!(
                    "{name}: offset {offset} is not aligned to {alignment}"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(c.err(format!("duplicate tensor {name}")));
            }
            tensors.push(TensorInfo {
                name,
                ne,
                ty,
                offset,
                nbytes,
            });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        for t in &mut tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.nbytes))
                .ok_or_else(|| {
                    Error::InvalidModel(format!("{what}: {}: offset overflows", t.name))
                })?;
            if end > file_len {
                return Err(Error::InvalidModel(format!(
                    "{what}: tensor {} ends at byte {end}, past the end of the file ({file_len} bytes): truncated?",
                    t.name
                )));
            }
            t.offset += data_offset;
        }
        // Tensors must not overlap.
        let mut spans: Vec<(u64, u64, &str)> = tensors
            .iter()
            .map(|t| (t.offset, t.offset + t.nbytes, t.name.as_str()))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(Error::InvalidModel(format!(
                    "{what}: tensors {} and {} overlap",
                    w[0].2, w[1].2
                )));
            }
        }
        Ok(GgufHeader {
            version,
            kv,
            keys,
            tensors,
            alignment,
            data_offset,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn missing(&self, key: &str) -> Error {
        Error::InvalidModel(format!("missing key {key}"))
    }

    pub fn req_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| self.missing(key))?
            .as_str()
            .ok_or_else(|| Error::InvalidModel(format!("key {key} is not a string")))
    }
    pub fn req_u32(&self, key: &str) -> Result<u32> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_i64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "key {key} = {v:?} is not an unsigned 32-bit integer"
                ))
            })
    }
    /// `req_u32` for a key that may be absent.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.get(key).map(|_| self.req_u32(key)).transpose()
    }
    pub fn req_i32(&self, key: &str) -> Result<i32> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_i64()
            .and_then(|x| i32::try_from(x).ok())
            .ok_or_else(|| {
                Error::InvalidModel(format!("key {key} = {v:?} is not a 32-bit integer"))
            })
    }
    pub fn req_f32(&self, key: &str) -> Result<f32> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x as f32),
            _ => Err(Error::InvalidModel(format!(
                "key {key} = {v:?} is not a finite number"
            ))),
        }
    }
    pub fn req_bool(&self, key: &str) -> Result<bool> {
        self.get(key)
            .ok_or_else(|| self.missing(key))?
            .as_bool()
            .ok_or_else(|| Error::InvalidModel(format!("key {key} is not a bool")))
    }
    pub fn req_f32_array<const N: usize>(&self, key: &str) -> Result<[f32; N]> {
        let a = self
            .get(key)
            .ok_or_else(|| self.missing(key))?
            .as_array()
            .ok_or_else(|| Error::InvalidModel(format!("key {key} is not an array")))?;
        if a.len() != N {
            return Err(Error::InvalidModel(format!(
                "key {key} has {} values, {N} expected",
                a.len()
            )));
        }
        let mut out = [0f32; N];
        for (o, v) in out.iter_mut().zip(a) {
            *o = v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| Error::InvalidModel(format!("key {key}: bad value {v:?}")))?
                as f32;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! Pure Rust (no ggml), so these also run under Miri.
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }

    /// A small valid file: three keys (string, u32, array of f32) and two
    /// tensors (f32 [4, 2] and f16 [8]) with their data.
    fn valid() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes()); // tensors
        b.extend(3u64.to_le_bytes()); // keys
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "x.count");
        b.extend(4u32.to_le_bytes());
        b.extend(7u32.to_le_bytes());
        s(&mut b, "x.mean");
        b.extend(9u32.to_le_bytes());
        b.extend(6u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        for f in [0.5f32, 0.25, 0.125] {
            b.extend(f.to_le_bytes());
        }
        for (name, ne, ty, off) in [("a", vec![4u64, 2], 0u32, 0u64), ("b", vec![8], 1, 32)] {
            s(&mut b, name);
            b.extend((ne.len() as u32).to_le_bytes());
            for d in ne {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            b.extend(off.to_le_bytes());
        }
        b.resize(b.len().div_ceil(32) * 32 + 64, 0);
        b
    }

    #[test]
    fn parses_a_valid_file() {
        let b = valid();
        let h = GgufHeader::parse(&b, "t").unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.keys, ["general.architecture", "x.count", "x.mean"]);
        assert_eq!(h.req_str("general.architecture").unwrap(), "llama");
        assert_eq!(h.req_u32("x.count").unwrap(), 7);
        assert_eq!(h.req_f32_array::<3>("x.mean").unwrap(), [0.5, 0.25, 0.125]);
        let a = h.tensor("a").unwrap();
        assert_eq!(
            (a.ne.as_slice(), a.ty, a.nbytes),
            (&[4u64, 2][..], GgmlType::F32, 32)
        );
        assert_eq!(a.offset, h.data_offset);
        assert_eq!(h.tensor("b").unwrap().offset, h.data_offset + 32);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = valid();
        let h = GgufHeader::parse(&b, "t").unwrap();
        let end = (h.data_offset + 48) as usize; // end of tensor b's data
        for n in 0..end {
            let e = GgufHeader::parse(&b[..n], "t").unwrap_err();
            assert!(matches!(e, Error::InvalidModel(_)), "{n}: {e}");
        }
    }

    #[test]
    fn corrupt_fields_are_errors() {
        let b = valid();
        let patch = |at: usize, bytes: &[u8]| {
            let mut c = b.clone();
            c[at..at + bytes.len()].copy_from_slice(bytes);
            GgufHeader::parse(&c, "t").unwrap_err().to_string()
        };
        assert!(patch(0, b"GGUX").contains("bad magic"));
        assert!(patch(4, &9u32.to_le_bytes()).contains("version"));
        assert!(patch(8, &u64::MAX.to_le_bytes()).contains("absurd"));
        assert!(patch(16, &(1u64 << 40).to_le_bytes()).contains("absurd"));
        // The first key's length, then its value type.
        assert!(patch(24, &(1u64 << 60).to_le_bytes()).contains("absurd"));
        assert!(patch(52, &99u32.to_le_bytes()).contains("unknown value type"));
        // Mutating every byte of the header one at a time never panics.
        let h = GgufHeader::parse(&b, "t").unwrap();
        for i in 0..h.data_offset as usize {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut c = b.clone();
                c[i] = v;
                let _ = GgufHeader::parse(&c, "t");
            }
        }
    }
}
