//! Hostile files and hostile inputs.
//!
//! 1. A corpus of malformed GGUF files, crafted here from the valid converted
//!    `tiny` model (byte edits of the valid file, or a re-serialisation by the
//!    small test-only GGUF editor below): each must give `InvalidModel` with
//!    a specific message from `Model::load`, in process, without a panic, an
//!    abort or a hang. Every LLM corruption must be caught by dam's own
//!    check before llama.cpp opens the file (llama.cpp aborts on some).
//! 2. Bad arguments through the Rust API: each returns its documented error
//!    and the same session then still gives the normal greedy caption.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use dam::image::{load_mask, load_rgb, MAX_IMAGE_SIDE};
use dam::GgmlType;
use dam::{
    DescribeOptions, Error, Frame, ImageView, LengthControl, Model, ModelParams, PixelFormat,
    Region, Session,
};

// ------------------------------------------------------------- GGUF editor

/// A test-only GGUF reader/writer: parses a valid file into key/values and
/// tensors (with their bytes), and writes it back, recording where every
/// field lies so that single fields can be corrupted in place.
mod gg {
    use dam::GgmlType;

    #[derive(Clone, Debug, PartialEq)]
    pub enum V {
        U8(u8),
        I8(i8),
        U16(u16),
        I16(i16),
        U32(u32),
        I32(i32),
        F32(f32),
        /// The raw byte, so that invalid bools can be written.
        Bool(u8),
        Str(Vec<u8>),
        /// Element type and elements.
        Arr(u32, Vec<V>),
        U64(u64),
        I64(i64),
        F64(f64),
    }

    impl V {
        pub fn s(s: &str) -> V {
            V::Str(s.as_bytes().to_vec())
        }
        pub fn ty(&self) -> u32 {
            match self {
                V::U8(_) => 0,
                V::I8(_) => 1,
                V::U16(_) => 2,
                V::I16(_) => 3,
                V::U32(_) => 4,
                V::I32(_) => 5,
                V::F32(_) => 6,
                V::Bool(_) => 7,
                V::Str(_) => 8,
                V::Arr(..) => 9,
                V::U64(_) => 10,
                V::I64(_) => 11,
                V::F64(_) => 12,
            }
        }
        fn write(&self, o: &mut Vec<u8>) {
            match self {
                V::U8(v) => o.push(*v),
                V::I8(v) => o.extend(v.to_le_bytes()),
                V::U16(v) => o.extend(v.to_le_bytes()),
                V::I16(v) => o.extend(v.to_le_bytes()),
                V::U32(v) => o.extend(v.to_le_bytes()),
                V::I32(v) => o.extend(v.to_le_bytes()),
                V::F32(v) => o.extend(v.to_le_bytes()),
                V::Bool(v) => o.push(*v),
                V::Str(s) => {
                    o.extend((s.len() as u64).to_le_bytes());
                    o.extend(s);
                }
                V::Arr(et, v) => {
                    o.extend(et.to_le_bytes());
                    o.extend((v.len() as u64).to_le_bytes());
                    for x in v {
                        x.write(o);
                    }
                }
                V::U64(v) => o.extend(v.to_le_bytes()),
                V::I64(v) => o.extend(v.to_le_bytes()),
                V::F64(v) => o.extend(v.to_le_bytes()),
            }
        }
    }

    #[derive(Clone, Debug)]
    pub struct Tensor {
        pub name: String,
        pub ne: Vec<u64>,
        pub ty: u32,
        pub data: Vec<u8>,
    }

    #[derive(Clone, Debug)]
    pub struct Gguf {
        pub version: u32,
        pub kv: Vec<(String, V)>,
        pub tensors: Vec<Tensor>,
        pub align: u64,
    }

    /// Byte positions of the fields of a written file.
    #[derive(Clone, Debug, Default)]
    pub struct Layout {
        /// Per key: its length field, its type field, its value.
        pub kv: Vec<usize>,
        pub kv_type: Vec<usize>,
        pub kv_value: Vec<usize>,
        /// Per tensor: its name's length field, n_dims, type and offset fields.
        pub ti: Vec<usize>,
        pub ti_ndims: Vec<usize>,
        pub ti_type: Vec<usize>,
        pub ti_offset: Vec<usize>,
        /// Relative data offset of each tensor.
        pub rel: Vec<u64>,
        /// Start of the data section.
        pub data: usize,
    }

    struct R<'a> {
        b: &'a [u8],
        p: usize,
    }

    impl R<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let s = &self.b[self.p..self.p + n];
            self.p += n;
            s
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn bytes(&mut self) -> Vec<u8> {
            let n = self.u64() as usize;
            self.take(n).to_vec()
        }
        fn value(&mut self, ty: u32) -> V {
            match ty {
                0 => V::U8(self.take(1)[0]),
                1 => V::I8(self.take(1)[0] as i8),
                2 => V::U16(u16::from_le_bytes(self.take(2).try_into().unwrap())),
                3 => V::I16(i16::from_le_bytes(self.take(2).try_into().unwrap())),
                4 => V::U32(self.u32()),
                5 => V::I32(self.u32() as i32),
                6 => V::F32(f32::from_bits(self.u32())),
                7 => V::Bool(self.take(1)[0]),
                8 => V::Str(self.bytes()),
                9 => {
                    let et = self.u32();
                    let n = self.u64();
                    V::Arr(et, (0..n).map(|_| self.value(et)).collect())
                }
                10 => V::U64(self.u64()),
                11 => V::I64(self.u64() as i64),
                12 => V::F64(f64::from_bits(self.u64())),
                t => panic!("value type {t}"),
            }
        }
    }

    fn align_up(x: u64, a: u64) -> u64 {
        x.div_ceil(a) * a
    }

    impl Gguf {
        /// Parses a valid file (panics on anything else: test input only).
        pub fn parse(b: &[u8]) -> Gguf {
            let mut r = R { b, p: 0 };
            assert_eq!(r.take(4), b"GGUF");
            let version = r.u32();
            let (nt, nkv) = (r.u64(), r.u64());
            let mut kv = Vec::new();
            for _ in 0..nkv {
                let k = String::from_utf8(r.bytes()).unwrap();
                let ty = r.u32();
                kv.push((k, r.value(ty)));
            }
            let align = match kv.iter().find(|(k, _)| k == "general.alignment") {
                Some((_, V::U32(a))) => *a as u64,
                _ => 32,
            };
            let mut infos = Vec::new();
            for _ in 0..nt {
                let name = String::from_utf8(r.bytes()).unwrap();
                let nd = r.u32();
                let ne: Vec<u64> = (0..nd).map(|_| r.u64()).collect();
                let ty = r.u32();
                let off = r.u64();
                infos.push((name, ne, ty, off));
            }
            let data = align_up(r.p as u64, align) as usize;
            let tensors = infos
                .into_iter()
                .map(|(name, ne, ty, off)| {
                    let n = GgmlType::from_raw(ty).unwrap().nbytes(&ne).unwrap() as usize;
                    let s = data + off as usize;
                    Tensor {
                        name,
                        ne,
                        ty,
                        data: b[s..s + n].to_vec(),
                    }
                })
                .collect();
            Gguf {
                version,
                kv,
                tensors,
                align,
            }
        }

        /// Serialises the file (tensors in order, each aligned).
        pub fn bytes(&self) -> (Vec<u8>, Layout) {
            let mut o = Vec::new();
            let mut l = Layout::default();
            o.extend(b"GGUF");
            o.extend(self.version.to_le_bytes());
            o.extend((self.tensors.len() as u64).to_le_bytes());
            o.extend((self.kv.len() as u64).to_le_bytes());
            for (k, v) in &self.kv {
                l.kv.push(o.len());
                V::s(k).write(&mut o);
                l.kv_type.push(o.len());
                o.extend(v.ty().to_le_bytes());
                l.kv_value.push(o.len());
                v.write(&mut o);
            }
            let mut rel = 0u64;
            for t in &self.tensors {
                l.ti.push(o.len());
                V::s(&t.name).write(&mut o);
                l.ti_ndims.push(o.len());
                o.extend((t.ne.len() as u32).to_le_bytes());
                for d in &t.ne {
                    o.extend(d.to_le_bytes());
                }
                l.ti_type.push(o.len());
                o.extend(t.ty.to_le_bytes());
                l.ti_offset.push(o.len());
                o.extend(rel.to_le_bytes());
                l.rel.push(rel);
                rel = align_up(rel + t.data.len() as u64, self.align);
            }
            o.resize(align_up(o.len() as u64, self.align) as usize, 0);
            l.data = o.len();
            for (t, r) in self.tensors.iter().zip(&l.rel) {
                o.resize(l.data + *r as usize, 0);
                o.extend(&t.data);
            }
            (o, l)
        }

        pub fn key(&self, k: &str) -> usize {
            self.kv
                .iter()
                .position(|(n, _)| n == k)
                .unwrap_or_else(|| panic!("no key {k}"))
        }
        pub fn get(&self, k: &str) -> &V {
            &self.kv[self.key(k)].1
        }
        pub fn set(&mut self, k: &str, v: V) {
            match self.kv.iter().position(|(n, _)| n == k) {
                Some(i) => self.kv[i].1 = v,
                None => self.kv.push((k.to_string(), v)),
            }
        }
        pub fn remove_key(&mut self, k: &str) {
            let i = self.key(k);
            self.kv.remove(i);
        }
        pub fn tensor_index(&self, name: &str) -> usize {
            self.tensors
                .iter()
                .position(|t| t.name == name)
                .unwrap_or_else(|| panic!("no tensor {name}"))
        }
        pub fn tensor(&mut self, name: &str) -> &mut Tensor {
            let i = self.tensor_index(name);
            &mut self.tensors[i]
        }
        pub fn remove_tensor(&mut self, name: &str) {
            let i = self.tensor_index(name);
            self.tensors.remove(i);
        }
    }
}

use gg::{Gguf, Layout, V};

// ------------------------------------------------------------------ corpus

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Llm,
    Vision,
    Segmenter,
}

/// One crafted file and the error it must give.
struct Crafted {
    name: String,
    bytes: Vec<u8>,
    substr: String,
}

struct Corpus {
    kind: Kind,
    base: Gguf,
    raw: Vec<u8>,
    lay: Layout,
    cases: Vec<Crafted>,
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// An f32 tensor's data as f16 (same values, half the bytes).
fn to_f16(t: &mut gg::Tensor) {
    assert_eq!(t.ty, GgmlType::F32.raw());
    t.data = t
        .data
        .chunks_exact(4)
        .flat_map(|c| half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
        .collect();
    t.ty = GgmlType::F16.raw();
}

impl Corpus {
    fn new(kind: Kind, path: &Path) -> Corpus {
        let bytes = std::fs::read(path).unwrap();
        let base = Gguf::parse(&bytes);
        let (raw, lay) = base.bytes();
        // The editor reproduces the converter's file exactly.
        assert!(
            raw == bytes,
            "{kind:?}: the GGUF editor does not round-trip"
        );
        Corpus {
            kind,
            base,
            raw,
            lay,
            cases: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, bytes: Vec<u8>, substr: impl Into<String>) {
        assert!(
            !self.cases.iter().any(|c| c.name == name),
            "duplicate case {name}"
        );
        self.cases.push(Crafted {
            name: name.into(),
            bytes,
            substr: substr.into(),
        });
    }

    /// A byte edit of the valid file.
    fn raw(
        &mut self,
        name: &str,
        substr: impl Into<String>,
        f: impl FnOnce(&mut Vec<u8>, &Layout),
    ) {
        let mut b = self.raw.clone();
        f(&mut b, &self.lay);
        self.add(name, b, substr);
    }

    /// An edit of the parsed file, written back.
    fn edit(&mut self, name: &str, substr: impl Into<String>, f: impl FnOnce(&mut Gguf)) {
        let mut g = self.base.clone();
        f(&mut g);
        let b = g.bytes().0;
        self.add(name, b, substr);
    }

    /// The architecture key set to `wrong` (which must give `msg`), and
    /// removed.
    fn identity(&mut self, wrong: &str, msg: &str) {
        self.edit("architecture_wrong", msg, |g| {
            g.set("general.architecture", V::s(wrong))
        });
        self.edit(
            "architecture_missing",
            "missing key general.architecture",
            |g| g.remove_key("general.architecture"),
        );
    }

    /// Structural corruptions common to every file. `matrix` is a 2-D tensor,
    /// `array_key` an array-valued key, `bool_key` a bool key (if the file
    /// has one).
    fn structural(&mut self, matrix: &str, array_key: &str, bool_key: Option<&str>) {
        let len = self.raw.len();
        let nkv = self.lay.kv.len();
        let nt = self.lay.ti.len();
        let mid_key = self.base.kv[nkv / 2].0.clone();

        // Truncations: header, KV section, tensor table, data.
        self.raw(
            "truncated_header",
            "truncated inside tensor count",
            |b, _| b.truncate(12),
        );
        self.raw(
            "truncated_kv",
            format!("truncated inside {mid_key}"),
            |b, l| b.truncate(l.kv_value[nkv / 2] + 1),
        );
        self.raw(
            "truncated_tensor_table",
            "truncated inside tensor dims",
            |b, l| b.truncate(l.ti_ndims[nt / 2] + 2),
        );
        self.raw("truncated_data", "past the end of the file", |b, l| {
            b.truncate(l.data + (len - l.data) / 2)
        });
        self.raw("truncated_to_zero", "truncated inside magic", |b, _| {
            b.clear()
        });

        // Magic and version.
        self.raw("bad_magic", "bad magic", |b, _| {
            b[..4].copy_from_slice(b"GGUX")
        });
        self.raw("version_1", "unsupported GGUF version 1", |b, _| {
            put_u32(b, 4, 1)
        });
        self.raw("version_4", "unsupported GGUF version 4", |b, _| {
            put_u32(b, 4, 4)
        });

        // Counts.
        self.raw("absurd_tensor_count", "absurd counts", |b, _| {
            put_u64(b, 8, u64::MAX)
        });
        self.raw("absurd_kv_count", "absurd counts", |b, _| {
            put_u64(b, 16, 1 << 40)
        });

        // Strings and arrays.
        self.raw("key_length_past_eof", "truncated inside key", |b, l| {
            let at = l.kv[nkv / 2];
            put_u64(b, at, (len - at - 8 + 1) as u64)
        });
        self.raw(
            "key_length_absurd",
            "string length 18446744073709551615 is absurd",
            |b, l| put_u64(b, l.kv[nkv / 2], u64::MAX),
        );
        let arch = self.base.key("general.architecture");
        self.raw(
            "string_value_past_eof",
            "truncated inside general.architecture",
            |b, l| {
                let at = l.kv_value[arch];
                put_u64(b, at, (len - at) as u64)
            },
        );
        let ak = self.base.key(array_key);
        self.raw(
            "array_length_absurd",
            "array length 1099511627776 is absurd",
            |b, l| put_u64(b, l.kv_value[ak] + 4, 1 << 40),
        );
        self.raw(
            "array_length_past_eof",
            "runs past the end of the file",
            |b, l| put_u64(b, l.kv_value[ak] + 4, 1 << 23),
        );
        self.raw("unknown_value_type", "unknown value type 13", |b, l| {
            put_u32(b, l.kv_type[nkv / 2], 13)
        });
        if let Some(bool_key) = bool_key {
            let bk = self.base.key(bool_key);
            self.raw(
                "bool_value_2",
                format!("{bool_key}: bool value 2"),
                |b, l| b[l.kv_value[bk]] = 2,
            );
        }
        self.raw("key_not_utf8", "key: string is not UTF-8", |b, l| {
            b[l.kv[nkv / 2] + 8] = 0xff
        });
        self.edit("nested_array", "nested arrays are not supported", |g| {
            g.set("test.nested", V::Arr(9, vec![V::Arr(4, vec![V::U32(1)])]))
        });
        self.edit("duplicate_key", "duplicate key general.architecture", |g| {
            let v = g.get("general.architecture").clone();
            g.kv.push(("general.architecture".into(), v));
        });
        self.edit("alignment_not_power_of_two", "bad general.alignment", |g| {
            g.set("general.alignment", V::U32(48))
        });
        self.edit("alignment_wrong_type", "bad general.alignment", |g| {
            g.set("general.alignment", V::U64(32))
        });

        // Tensor table.
        let mi = self.base.tensor_index(matrix);
        let ne = self.base.tensors[mi].ne.clone();
        self.edit(
            "dims_overflow",
            format!("{matrix}: shape [4294967296, 4294967296, 4294967296] overflows"),
            |g| g.tensor(matrix).ne = vec![1 << 32, 1 << 32, 1 << 32],
        );
        self.edit(
            "dim_above_i64",
            format!("{matrix}: dimension 9223372036854775808"),
            |g| g.tensor(matrix).ne[0] = 1 << 63,
        );
        self.edit("zero_dim", format!("{matrix}: dimension 0"), |g| {
            g.tensor(matrix).ne[1] = 0
        });
        self.edit("n_dims_0", format!("{matrix}: 0 dimensions"), |g| {
            g.tensor(matrix).ne.clear()
        });
        self.edit("n_dims_5", format!("{matrix}: 5 dimensions"), |g| {
            g.tensor(matrix).ne.extend([1, 1, 1])
        });
        self.edit(
            "row_not_multiple_of_block",
            format!(
                "{matrix}: shape [33, {}] overflows or does not fit type q8_0",
                ne[1]
            ),
            |g| {
                let t = g.tensor(matrix);
                t.ne[0] = 33;
                t.ty = GgmlType::Q8_0.raw();
            },
        );
        self.raw("unknown_type_99", "unsupported ggml type 99", |b, l| {
            put_u32(b, l.ti_type[mi], 99)
        });
        self.raw("type_i32", "unsupported ggml type 26", |b, l| {
            put_u32(b, l.ti_type[mi], 26)
        });
        self.raw("offset_past_eof", "past the end of the file", |b, l| {
            put_u64(
                b,
                l.ti_offset[nt - 1],
                (len - l.data).div_ceil(32) as u64 * 32,
            )
        });
        self.raw("offset_overflow", "offset overflows", |b, l| {
            put_u64(b, l.ti_offset[nt - 1], u64::MAX - 31)
        });
        self.raw("offset_misaligned", "is not aligned to 32", |b, l| {
            put_u64(b, l.ti_offset[1], l.rel[1] + 4)
        });
        let (t0, t1) = (&self.base.tensors[0], &self.base.tensors[1]);
        let n0 = t0.name.clone();
        // The reader names the pair sorted by (start, end, name); both start at 0.
        let mut pair = [
            (t0.data.len(), t0.name.clone()),
            (t1.data.len(), t1.name.clone()),
        ];
        pair.sort();
        let overlap = format!("tensors {} and {} overlap", pair[0].1, pair[1].1);
        self.raw("overlapping_tensors", overlap, |b, l| {
            put_u64(b, l.ti_offset[1], l.rel[0])
        });
        self.edit("duplicate_tensor", format!("duplicate tensor {n0}"), |g| {
            g.tensors[1].name = n0.clone()
        });
        self.edit("tensor_name_too_long", "tensor name too long", |g| {
            g.tensors[1].name = "x".repeat(80)
        });
        // ggml compares names as C strings: "k\0" would shadow "k".
        self.edit(
            "key_with_nul",
            format!("key {:?} contains a NUL byte", format!("{mid_key}\0")),
            |g| g.kv.insert(0, (format!("{mid_key}\0"), V::U32(0))),
        );
        self.edit(
            "tensor_name_with_nul",
            format!("tensor name {:?} contains a NUL byte", format!("{n0}\0")),
            |g| g.tensors[1].name = format!("{n0}\0"),
        );
    }
}

fn llm_corpus(llm: &Path) -> Corpus {
    let mut c = Corpus::new(Kind::Llm, llm);
    c.structural(
        "blk.0.ffn_up.weight",
        "tokenizer.ggml.tokens",
        Some("tokenizer.ggml.add_bos_token"),
    );
    let vocab = c.base.tensors[c.base.tensor_index("token_embd.weight")].ne[1];
    assert_eq!(vocab, 1000);

    // Tensors against the hyper-parameters.
    c.edit(
        "wrong_shape",
        "tensor blk.0.ffn_up.weight has shape [160, 64], expected [64, 160]",
        |g| g.tensor("blk.0.ffn_up.weight").ne = vec![160, 64],
    );
    c.edit(
        "token_embd_wrong_shape",
        "llama.vocab_size 1000 but token_embd.weight has 999 rows",
        |g| {
            let t = g.tensor("token_embd.weight");
            t.ne[1] = 999;
            t.data.truncate(64 * 999 * 4);
        },
    );
    c.edit(
        "token_embd_wrong_width",
        "tensor token_embd.weight has shape [32, 2000], expected [64, n_vocab]",
        |g| g.tensor("token_embd.weight").ne = vec![32, 2000],
    );
    c.edit(
        "output_wrong_shape",
        "tensor output.weight has shape [64, 999], expected [64, 1000]",
        |g| {
            let t = g.tensor("output.weight");
            t.ne[1] = 999;
            t.data.truncate(64 * 999 * 4);
        },
    );
    c.edit(
        "attn_q_wrong_shape",
        "tensor blk.1.attn_q.weight has shape [64, 32], expected [64, 64]",
        |g| {
            let t = g.tensor("blk.1.attn_q.weight");
            t.ne[1] = 32;
            t.data.truncate(64 * 32 * 4);
        },
    );
    c.edit(
        "norm_as_f16",
        "tensor output_norm.weight has type f16, expected f32",
        |g| to_f16(g.tensor("output_norm.weight")),
    );
    c.edit(
        "layer_norm_as_f16",
        "tensor blk.1.ffn_norm.weight has type f16, expected f32",
        |g| to_f16(g.tensor("blk.1.ffn_norm.weight")),
    );
    c.edit(
        "missing_tensor",
        "missing tensor blk.1.ffn_down.weight",
        |g| g.remove_tensor("blk.1.ffn_down.weight"),
    );
    c.edit(
        "missing_token_embd",
        "missing tensor token_embd.weight",
        |g| g.remove_tensor("token_embd.weight"),
    );
    c.edit(
        "missing_output_norm",
        "missing tensor output_norm.weight",
        |g| g.remove_tensor("output_norm.weight"),
    );
    c.edit(
        "extra_tensor",
        "unexpected tensor blk.0.extra.weight",
        |g| {
            g.tensors.push(gg::Tensor {
                name: "blk.0.extra.weight".into(),
                ne: vec![64],
                ty: 0,
                data: vec![0; 256],
            })
        },
    );
    c.edit(
        "extra_layer",
        "unexpected tensor blk.2.attn_norm.weight",
        |g| {
            let mut t = g.tensor("blk.1.attn_norm.weight").clone();
            t.name = "blk.2.attn_norm.weight".into();
            g.tensors.push(t);
        },
    );

    // Keys.
    c.edit("missing_key", "missing key llama.embedding_length", |g| {
        g.remove_key("llama.embedding_length")
    });
    c.edit(
        "missing_key_rms_eps",
        "missing key llama.attention.layer_norm_rms_epsilon",
        |g| g.remove_key("llama.attention.layer_norm_rms_epsilon"),
    );
    c.edit(
        "key_wrong_type_string",
        "key llama.block_count = string \"2\" must be a u32",
        |g| g.set("llama.block_count", V::s("2")),
    );
    c.edit(
        "key_wrong_type_i32",
        "key llama.block_count = i32 2 must be a u32",
        |g| g.set("llama.block_count", V::I32(2)),
    );
    c.edit(
        "key_wrong_type_f32",
        "key llama.attention.layer_norm_rms_epsilon = u32 1 must be a finite f32",
        |g| g.set("llama.attention.layer_norm_rms_epsilon", V::U32(1)),
    );
    c.edit(
        "rms_eps_nan",
        "key llama.attention.layer_norm_rms_epsilon = f32 NaN must be a finite f32",
        |g| g.set("llama.attention.layer_norm_rms_epsilon", V::F32(f32::NAN)),
    );
    c.edit(
        "rms_eps_negative",
        "RMS norm epsilon -0.001 must be positive",
        |g| g.set("llama.attention.layer_norm_rms_epsilon", V::F32(-1e-3)),
    );

    // Contradictory hyper-parameters (several abort llama.cpp's loader).
    c.edit("block_count_0", "block count 0", |g| {
        g.set("llama.block_count", V::U32(0))
    });
    c.edit("block_count_600", "block count 600", |g| {
        g.set("llama.block_count", V::U32(600))
    });
    c.edit(
        "block_count_3",
        "missing tensor blk.2.attn_norm.weight",
        |g| g.set("llama.block_count", V::U32(3)),
    );
    c.edit("head_count_0", "0 attention heads", |g| {
        g.set("llama.attention.head_count", V::U32(0))
    });
    c.edit(
        "kv_heads_not_dividing",
        "3 key/value heads do not divide 4 attention heads",
        |g| g.set("llama.attention.head_count_kv", V::U32(3)),
    );
    c.edit(
        "heads_not_dividing_width",
        "3 attention heads do not divide the width 64",
        |g| {
            g.set("llama.attention.head_count", V::U32(3));
            g.set("llama.attention.head_count_kv", V::U32(3));
            g.remove_key("llama.attention.key_length");
            g.remove_key("llama.attention.value_length");
        },
    );
    c.edit(
        "value_length_differs",
        "key length 16 and value length 8 differ",
        |g| g.set("llama.attention.value_length", V::U32(8)),
    );
    c.edit(
        "rope_dims_differ",
        "RoPE dimension count 8 differs from the head size 16",
        |g| g.set("llama.rope.dimension_count", V::U32(8)),
    );
    c.edit("rope_scaling_unknown", "RoPE scaling type 'bogus'", |g| {
        g.set("llama.rope.scaling.type", V::s("bogus"))
    });
    c.edit("experts", "mixture-of-experts", |g| {
        g.set("llama.expert_count", V::U32(4))
    });
    c.edit(
        "vocab_size_mismatch",
        "llama.vocab_size 999 but token_embd.weight has 1000 rows",
        |g| g.set("llama.vocab_size", V::U32(999)),
    );
    c.edit("context_length_0", "context length 0", |g| {
        g.set("llama.context_length", V::U32(0))
    });

    // Tokenizer.
    c.edit("tokens_missing", "missing key tokenizer.ggml.tokens", |g| {
        g.remove_key("tokenizer.ggml.tokens")
    });
    c.edit(
        "tokens_short",
        "tokenizer.ggml.tokens has 999 entries, the vocabulary 1000",
        |g| {
            let i = g.key("tokenizer.ggml.tokens");
            if let V::Arr(_, a) = &mut g.kv[i].1 {
                a.pop();
            }
        },
    );
    c.edit(
        "tokens_wrong_type",
        "tokenizer.ggml.tokens is not an array of strings",
        |g| g.set("tokenizer.ggml.tokens", V::Arr(4, vec![V::U32(7); 1000])),
    );
    c.edit("tokens_duplicate", "duplicate entry", |g| {
        let i = g.key("tokenizer.ggml.tokens");
        if let V::Arr(_, a) = &mut g.kv[i].1 {
            a[500] = a[501].clone();
        }
    });
    c.edit(
        "tokens_duplicate_after_nul",
        "as llama.cpp reads them",
        |g| {
            let i = g.key("tokenizer.ggml.tokens");
            if let V::Arr(_, a) = &mut g.kv[i].1 {
                let mut t = match &a[600] {
                    V::Str(t) => t.clone(),
                    _ => unreachable!(),
                };
                t.extend(b"\0tail");
                a[601] = V::Str(t);
            }
        },
    );
    c.edit(
        "tokens_no_byte_fallback",
        "the SentencePiece vocabulary lacks the byte token <0xE6>",
        |g| {
            let i = g.key("tokenizer.ggml.tokens");
            if let V::Arr(_, a) = &mut g.kv[i].1 {
                // A byte >= 0x80 has no one-character fallback.
                let k = a.iter().position(|t| *t == V::s("<0xE6>")).unwrap();
                a[k] = V::s("<0xE6>?");
            }
        },
    );
    c.edit(
        "tokens_empty",
        "the SentencePiece vocabulary lacks the byte token",
        |g| {
            let i = g.key("tokenizer.ggml.tokens");
            if let V::Arr(_, a) = &mut g.kv[i].1 {
                for t in a.iter_mut().step_by(2) {
                    *t = V::s("");
                }
            }
        },
    );
    c.edit(
        "key_shadowed_by_nul",
        "key \"llama.block_count\\0\" contains a NUL byte",
        |g| g.kv.insert(0, ("llama.block_count\0".into(), V::U32(0))),
    );
    c.edit(
        "scores_short",
        "tokenizer.ggml.scores has 10 entries, the vocabulary 1000",
        |g| g.set("tokenizer.ggml.scores", V::Arr(6, vec![V::F32(0.0); 10])),
    );
    c.edit(
        "scores_wrong_type",
        "tokenizer.ggml.scores is not an array of f32",
        |g| g.set("tokenizer.ggml.scores", V::Arr(8, vec![V::s("x"); 1000])),
    );
    c.edit(
        "token_type_wrong_type",
        "tokenizer.ggml.token_type is not an array of i32",
        |g| {
            g.set(
                "tokenizer.ggml.token_type",
                V::Arr(6, vec![V::F32(1.0); 1000]),
            )
        },
    );
    c.edit(
        "tokenizer_unknown",
        "tokenizer model 'bogus' is not supported",
        |g| g.set("tokenizer.ggml.model", V::s("bogus")),
    );
    c.edit(
        "tokenizer_none",
        "tokenizer model 'no_vocab' is not supported",
        |g| g.set("tokenizer.ggml.model", V::s("no_vocab")),
    );
    c.edit(
        "bos_out_of_range",
        "tokenizer.ggml.bos_token_id 5000 is outside the vocabulary (1000)",
        |g| g.set("tokenizer.ggml.bos_token_id", V::U32(5000)),
    );

    // Identity.
    c.edit(
        "architecture_wrong",
        "architecture 'mistral', expected 'llama'",
        |g| g.set("general.architecture", V::s("mistral")),
    );
    c.edit(
        "architecture_not_string",
        "key general.architecture is not a string",
        |g| g.set("general.architecture", V::U32(1)),
    );
    c.edit(
        "architecture_missing",
        "missing key general.architecture",
        |g| g.remove_key("general.architecture"),
    );
    c
}

fn vision_corpus(vision: &Path) -> Corpus {
    let mut c = Corpus::new(Kind::Vision, vision);
    c.structural(
        "v.blk.0.ffn_up.weight",
        "dam.vision.image_mean",
        Some("dam.context.masked_cross_attn"),
    );
    // Tensors against the hyper-parameters.
    c.edit(
        "wrong_shape",
        "tensor v.blk.0.ffn_up.weight has shape [96, 48], expected [48, 96]",
        |g| g.tensor("v.blk.0.ffn_up.weight").ne = vec![96, 48],
    );
    c.edit(
        "gate_wrong_shape",
        "tensor v.ctx.blk.1.attn_factor has shape [2], expected [1]",
        |g| {
            let t = g.tensor("v.ctx.blk.1.attn_factor");
            t.ne = vec![2];
            t.data.extend([0; 4]);
        },
    );
    c.edit(
        "norm_as_f16",
        "tensor v.blk.0.ln1.weight has type f16, expected f32",
        |g| to_f16(g.tensor("v.blk.0.ln1.weight")),
    );
    c.edit(
        "bias_as_f16",
        "tensor mm.fc1.bias has type f16, expected f32",
        |g| to_f16(g.tensor("mm.fc1.bias")),
    );
    c.edit("missing_tensor", "missing tensor mm.fc2.bias", |g| {
        g.remove_tensor("mm.fc2.bias")
    });
    c.edit(
        "missing_layer_tensor",
        "missing tensor v.ctx.blk.1.mlp_factor",
        |g| g.remove_tensor("v.ctx.blk.1.mlp_factor"),
    );
    c.edit("extra_tensor", "unexpected tensors: v.extra.weight", |g| {
        g.tensors.push(gg::Tensor {
            name: "v.extra.weight".into(),
            ne: vec![48],
            ty: 0,
            data: vec![0; 192],
        })
    });
    c.edit("alignment_8", "is not 32-byte aligned", |g| {
        g.set("general.alignment", V::U32(8));
        g.align = 8;
    });

    // Keys.
    c.edit("missing_key", "missing key dam.vision.patch_size", |g| {
        g.remove_key("dam.vision.patch_size")
    });
    c.edit(
        "missing_prompt_key",
        "missing key dam.prompt.default_query",
        |g| g.remove_key("dam.prompt.default_query"),
    );
    c.edit(
        "key_wrong_type_string",
        "key dam.vision.activation is not a string",
        |g| g.set("dam.vision.activation", V::U32(1)),
    );
    c.edit(
        "key_wrong_type_u32",
        "key dam.vision.image_size = Str(\"70\") is not an unsigned 32-bit integer",
        |g| g.set("dam.vision.image_size", V::s("70")),
    );
    c.edit(
        "key_wrong_type_bool",
        "key dam.context.masked_cross_attn is not a bool",
        |g| g.set("dam.context.masked_cross_attn", V::U8(1)),
    );
    c.edit(
        "eps_nan",
        "key dam.vision.attention.layer_norm_epsilon = F32(NaN) is not a finite number",
        |g| g.set("dam.vision.attention.layer_norm_epsilon", V::F32(f32::NAN)),
    );
    c.edit(
        "image_mean_two_values",
        "key dam.vision.image_mean has 2 values, 3 expected",
        |g| g.set("dam.vision.image_mean", V::Arr(6, vec![V::F32(0.5); 2])),
    );
    c.edit("image_std_zero", "image std must be non-zero", |g| {
        g.set("dam.vision.image_std", V::Arr(6, vec![V::F32(0.0); 3]))
    });

    // Contradictory hyper-parameters.
    c.edit(
        "heads_not_dividing",
        "5 heads do not divide width 48",
        |g| g.set("dam.vision.attention.head_count", V::U32(5)),
    );
    c.edit(
        "matrix_input_narrower",
        "matrix input length 40 for width 48",
        |g| g.set("dam.vision.matrix_input_length", V::U32(40)),
    );
    c.edit(
        "matrix_input_too_wide",
        "matrix input length 100 for width 48",
        |g| g.set("dam.vision.matrix_input_length", V::U32(100)),
    );
    c.edit(
        "matrix_input_not_the_tensors",
        "tensor v.blk.0.attn_q.weight has shape [48, 48], expected [54, 48]",
        |g| g.set("dam.vision.matrix_input_length", V::U32(54)),
    );
    c.edit(
        "context_heads_zero",
        "0 context heads do not divide width 48",
        |g| g.set("dam.context.attention.head_count", V::U32(0)),
    );
    c.edit(
        "image_smaller_than_patch",
        "image size 10 / patch size 14",
        |g| g.set("dam.vision.image_size", V::U32(10)),
    );
    c.edit("patch_size_0", "image size 70 / patch size 0", |g| {
        g.set("dam.vision.patch_size", V::U32(0))
    });
    c.edit(
        "select_layer_too_low",
        "select layer -7 with 3 layers",
        |g| g.set("dam.vision.select_layer", V::I32(-7)),
    );
    c.edit(
        "select_layer_too_high",
        "select layer 5 with 3 layers",
        |g| g.set("dam.vision.select_layer", V::I32(5)),
    );
    c.edit("select_layer_0", "select layer 0 with 3 layers", |g| {
        g.set("dam.vision.select_layer", V::I32(0))
    });
    c.edit(
        "too_few_context_blocks",
        "1 cross-attention blocks for 2 used layers",
        |g| g.set("dam.context.block_count", V::U32(1)),
    );
    c.edit("mask_channels_2", "2 mask channels (1 supported)", |g| {
        g.set("dam.vision.num_mask_channels", V::U32(2))
    });
    c.edit("max_frames_0", "max frames 0", |g| {
        g.set("dam.prompt.max_frames", V::U32(0))
    });
    c.edit(
        "activation_unknown",
        "activation relu is not supported",
        |g| g.set("dam.vision.activation", V::s("relu")),
    );
    c.edit(
        "default_query_with_image",
        "dam.prompt.default_query must not contain <image>",
        |g| g.set("dam.prompt.default_query", V::s("<image> Describe it.")),
    );
    c.edit(
        "image_prefix_with_image",
        "dam.prompt.image_prefix must not contain <image>",
        |g| g.set("dam.prompt.image_prefix", V::s("<image>")),
    );
    c.edit("layers_0", "0 layers", |g| {
        g.set("dam.vision.block_count", V::U32(0))
    });

    c.identity(
        "clip",
        "general.architecture is 'clip', expected 'dam-vision'",
    );
    c
}

fn segmenter_corpus(seg: &Path) -> Corpus {
    let mut c = Corpus::new(Kind::Segmenter, seg);
    c.structural(
        "enc.blk.0.attn_q.weight",
        "dam.segmenter.preprocess.image_mean",
        None,
    );
    c.identity(
        "dam-vision",
        "general.architecture is 'dam-vision', expected 'dam-segmenter'",
    );
    c.edit("missing_tensor", "enc.blk.0.attn_q.weight", |g| {
        g.remove_tensor("enc.blk.0.attn_q.weight")
    });
    c.edit("wrong_shape", "enc.blk.0.attn_q.weight", |g| {
        let t = g.tensor("enc.blk.0.attn_q.weight");
        t.ne = vec![24, 96];
    });
    c.edit("layers_0", "0 encoder", |g| {
        g.set("dam.segmenter.block_count", V::U32(0))
    });
    c.edit("image_size_0", "image size 0", |g| {
        g.set("dam.segmenter.image_size", V::U32(0))
    });
    c
}

/// Loads `path` as a segmenter and checks the error; returns a failure line.
fn expect_invalid_segmenter(label: &str, path: &Path, substr: &str) -> Option<String> {
    println!("[{label}]");
    invalid_model_failure(
        label,
        dam::segmenter::Segmenter::load(path, 2).map(drop),
        substr,
    )
}

/// A failure line unless `r` is an `InvalidModel` error containing `substr`.
fn invalid_model_failure(label: &str, r: dam::Result<()>, substr: &str) -> Option<String> {
    let e = match r {
        Ok(()) => return Some(format!("{label}: loaded without error")),
        Err(e) => e,
    };
    println!("    -> {}: {e}", variant(&e));
    let msg = e.to_string();
    if !matches!(e, Error::InvalidModel(_)) {
        Some(format!(
            "{label}: {} instead of InvalidModel: {msg}",
            variant(&e)
        ))
    } else if !msg.contains(substr) {
        Some(format!("{label}: message lacks {substr:?}: {msg}"))
    } else if msg.contains("llama.cpp cannot load") {
        Some(format!("{label}: reached llama.cpp: {msg}"))
    } else {
        None
    }
}

/// Malformed segmenter files, and DAM files given as segmenters: each is
/// `InvalidModel` naming the problem, never a panic or a ggml abort.
#[test]
fn malformed_segmenter_corpus() {
    let seg = converted_segmenter(GgmlType::F32);
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let dir = scratch("seg-corpus");
    let corpus = segmenter_corpus(&seg);
    let ok = dir.join("roundtrip.gguf");
    std::fs::write(&ok, &corpus.raw).unwrap();
    dam::segmenter::Segmenter::load(&ok, 2).expect("the re-written valid file loads");
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let p = dir.join(format!("{}.gguf", case.name));
        std::fs::write(&p, &case.bytes).unwrap();
        failures.extend(expect_invalid_segmenter(&case.name, &p, &case.substr));
    }
    failures.extend(expect_invalid_segmenter(
        "vision file",
        &vision,
        "expected 'dam-segmenter'",
    ));
    failures.extend(expect_invalid_segmenter(
        "LLM file",
        &llm,
        "expected 'dam-segmenter'",
    ));
    // A model loaded with a bad segmenter fails as a whole, naming the file.
    let bad = dir.join("architecture_wrong.gguf");
    match Model::load(
        &llm,
        &vision,
        ModelParams {
            segmenter: Some(bad.clone()),
            ..params()
        },
    ) {
        Err(Error::InvalidModel(m)) => assert!(m.contains("architecture_wrong.gguf"), "{m}"),
        other => failures.push(format!("model with a bad segmenter: {:?}", other.err())),
    }
    println!("cases: {}", corpus.cases.len());
    assert!(
        corpus.cases.len() >= 20,
        "only {} cases",
        corpus.cases.len()
    );
    finish(&dir, &failures);
}

/// Bad clicks and boxes through a model's segmenter: `InvalidArgument`
/// naming the problem, and the session still describes afterwards.
#[test]
fn bad_segmenter_prompts_return_errors() {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(
        &llm,
        &vision,
        ModelParams {
            segmenter: Some(converted_segmenter(GgmlType::F32)),
            ..params()
        },
    )
    .unwrap();
    let mut s = model.session().unwrap();
    let inp = Inputs::load("tiny", "c1");
    let (w, h) = (inp.img.width as f32, inp.img.height as f32);
    let greedy = DescribeOptions {
        max_new_tokens: 4,
        ..DescribeOptions::greedy()
    };
    let sbox = |x0, y0, x1, y1| Region::SegmentedBox { x0, y0, x1, y1 };
    let cases: Vec<(&str, Region, &str)> = vec![
        (
            "click left of the image",
            Region::Points(vec![(-1.0, 5.0, true)]),
            "outside",
        ),
        (
            "click below the image",
            Region::Points(vec![(5.0, h + 1.0, true)]),
            "outside",
        ),
        (
            "NaN click",
            Region::Points(vec![(f32::NAN, 5.0, true)]),
            "outside",
        ),
        (
            "infinite click",
            Region::Points(vec![(5.0, f32::INFINITY, false)]),
            "outside",
        ),
        ("no clicks", Region::Points(vec![]), "a point or a box"),
        ("zero-width box", sbox(10.0, 10.0, 10.0, 20.0), "not a box"),
        ("inverted box", sbox(20.0, 20.0, 10.0, 10.0), "not a box"),
        (
            "box past the image",
            sbox(0.0, 0.0, w + 5.0, h),
            "not a box",
        ),
        ("NaN box", sbox(0.0, f32::NAN, 5.0, 5.0), "not a box"),
    ];
    let want = s
        .describe(&inp.image(), &inp.region(), &greedy)
        .unwrap()
        .text;
    for (label, region, substr) in cases {
        match s.describe(&inp.image(), &region, &greedy) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(substr), "{label}: {m}"),
            other => panic!("{label}: {other:?}"),
        }
        assert_eq!(
            s.describe(&inp.image(), &inp.region(), &greedy)
                .unwrap()
                .text,
            want
        );
    }
}

fn params() -> ModelParams {
    ModelParams {
        threads: 2,
        ..ModelParams::reference()
    }
}

fn variant(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "InvalidArgument",
        Error::InvalidRegion(_) => "InvalidRegion",
        Error::UnsupportedRegion(_) => "UnsupportedRegion",
        Error::InvalidModel(_) => "InvalidModel",
        Error::Convert(_) => "Convert",
        Error::Io(_) => "Io",
        Error::ContextOverflow(_) => "ContextOverflow",
        Error::Cancelled => "Cancelled",
        Error::Backend(_) => "Backend",
    }
}

/// Loads `llm` + `vision` and checks the error; returns a failure line.
fn expect_invalid_model(label: &str, llm: &Path, vision: &Path, substr: &str) -> Option<String> {
    use std::io::Write;
    // Printed before the call: if the process dies, the log names the case.
    println!("[{label}]");
    std::io::stdout().flush().ok();
    invalid_model_failure(label, Model::load(llm, vision, params()).map(drop), substr)
}

/// Removes a corpus folder; fails with every failure line, if any.
fn finish(dir: &Path, failures: &[String]) {
    std::fs::remove_dir_all(dir).ok();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dam-hostile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn malformed_gguf_corpus() {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let (geom_llm, _) = converted("geom", GgmlType::F32);
    let dir = scratch("corpus");
    let mut failures = Vec::new();
    let mut counts = Vec::new();

    for corpus in [llm_corpus(&llm), vision_corpus(&vision)] {
        // The editor's output of the unmodified file loads.
        let ok = dir.join(format!("{:?}-roundtrip.gguf", corpus.kind));
        std::fs::write(&ok, &corpus.raw).unwrap();
        let (l, v) = match corpus.kind {
            Kind::Llm => (ok.as_path(), vision.as_path()),
            _ => (llm.as_path(), ok.as_path()),
        };
        Model::load(l, v, params()).expect("the re-written valid file loads");

        for case in &corpus.cases {
            let p = dir.join(format!("{:?}-{}.gguf", corpus.kind, case.name));
            std::fs::write(&p, &case.bytes).unwrap();
            let (l, v) = match corpus.kind {
                Kind::Llm => (p.as_path(), vision.as_path()),
                _ => (llm.as_path(), p.as_path()),
            };
            let label = format!("{:?}/{}", corpus.kind, case.name);
            failures.extend(expect_invalid_model(&label, l, v, &case.substr));
        }
        counts.push((corpus.kind, corpus.cases.len()));
    }

    // Files swapped or mismatched.
    failures.extend(expect_invalid_model(
        "Vision-as-LLM",
        &vision,
        &vision,
        "architecture 'dam-vision', expected 'llama' (is this the vision file?)",
    ));
    failures.extend(expect_invalid_model(
        "LLM-as-vision",
        &llm,
        &llm,
        "general.architecture is 'llama', expected 'dam-vision' (is this the LLM file?)",
    ));
    failures.extend(expect_invalid_model(
        "swapped",
        &vision,
        &llm,
        "(is this the LLM file?)",
    ));
    failures.extend(expect_invalid_model(
        "width-mismatch (tiny vision, geom LLM)",
        &geom_llm,
        &vision,
        "the vision file projects to width 64 but the LLM's width is 128",
    ));
    // Not a file at all.
    let missing = dir.join("missing.gguf");
    match Model::load(&llm, &missing, params()) {
        Err(Error::Io(m)) => println!("[missing file] -> Io: {m}"),
        other => failures.push(format!("missing file: {:?}", other.err())),
    }
    match Model::load(&dir, &vision, params()) {
        Err(e) => println!("[directory as LLM] -> {}: {e}", variant(&e)),
        Ok(_) => failures.push("directory as LLM loaded".into()),
    }

    println!("cases: {counts:?}");
    for (kind, n) in counts {
        assert!(n >= 20, "{kind:?}: only {n} cases");
    }
    finish(&dir, &failures);
}

// -------------------------------------------------------------- bad inputs

struct Inputs {
    img: dam::RgbImage,
    mask: dam::Mask,
}

impl Inputs {
    fn load(model: &str, case: &str) -> Inputs {
        let dir = fixtures().join(model).join("cases");
        Inputs {
            img: load_rgb(dir.join(format!("{case}_image.png"))).unwrap(),
            mask: load_mask(dir.join(format!("{case}_mask.png"))).unwrap(),
        }
    }
    fn image(&self) -> ImageView<'_> {
        let i = &self.img;
        i.view().unwrap()
    }
    fn region(&self) -> Region<'_> {
        let m = &self.mask;
        Region::Mask(m.view().unwrap())
    }
}

fn check_err<T: std::fmt::Debug>(
    what: &str,
    r: dam::Result<T>,
    want: &str,
    substr: &str,
    failures: &mut Vec<String>,
) {
    match r {
        Ok(v) => failures.push(format!("{what}: succeeded: {v:?}")),
        Err(e) => {
            println!("[{what}] -> {}: {e}", variant(&e));
            if variant(&e) != want || !e.to_string().contains(substr) {
                failures.push(format!(
                    "{what}: got {}: {e}; want {want} with {substr:?}",
                    variant(&e)
                ));
            }
        }
    }
}

#[test]
fn bad_inputs_return_errors_and_the_session_recovers() {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(&llm, &vision, params()).unwrap();
    let mut s = model.session().unwrap();
    let inp = Inputs::load("tiny", "c4");
    let (w, h) = (inp.img.width, inp.img.height);
    let greedy = DescribeOptions {
        max_new_tokens: 12,
        ..DescribeOptions::greedy()
    };
    let reference = s.describe(&inp.image(), &inp.region(), &greedy).unwrap();
    assert!(!reference.tokens.is_empty());
    let mut failures = Vec::new();
    let recover = |s: &mut Session, after: &str, failures: &mut Vec<String>| match s.describe(
        &inp.image(),
        &inp.region(),
        &greedy,
    ) {
        Ok(c) if c.tokens == reference.tokens && c.text == reference.text => {}
        Ok(c) => failures.push(format!("after {after}: caption changed: {:?}", c.text)),
        Err(e) => failures.push(format!("after {after}: session broken: {e}")),
    };
    let f = &mut failures;

    // Image views: sizes, strides, buffer length.
    let data = inp.img.data.as_slice();
    let row = w as usize * 3;
    // (what, width, height, stride, data, message)
    type ViewCase<'a> = (&'a str, u32, u32, usize, &'a [u8], &'a str);
    let cases: Vec<ViewCase> = vec![
        ("width 0", 0, h, row, data, "image width 0 is out of range"),
        (
            "height 0",
            w,
            0,
            row,
            data,
            "image height 0 is out of range",
        ),
        (
            "width > MAX_IMAGE_SIDE",
            MAX_IMAGE_SIDE + 1,
            1,
            (MAX_IMAGE_SIDE as usize + 1) * 3,
            data,
            "image width 16385 is out of range",
        ),
        (
            "height > MAX_IMAGE_SIDE",
            1,
            MAX_IMAGE_SIDE + 1,
            3,
            data,
            "image height 16385 is out of range",
        ),
        (
            "huge width and height",
            u32::MAX,
            u32::MAX,
            usize::MAX,
            data,
            "out of range",
        ),
        (
            "stride smaller than a row",
            w,
            h,
            row - 1,
            data,
            "smaller than one row",
        ),
        (
            "data too short",
            w,
            h,
            row,
            &data[..data.len() - 1],
            "image buffer has",
        ),
        ("stride overflow", w, h, usize::MAX / 2, data, "overflows"),
        (
            "empty data",
            w,
            h,
            row,
            &data[..0],
            "image buffer has 0 bytes",
        ),
    ];
    for (what, cw, ch, stride, d, substr) in cases {
        let r = ImageView::new(d, cw, ch, stride, PixelFormat::Rgb8);
        check_err(what, r, "InvalidArgument", substr, f);
    }
    recover(&mut s, "bad image views", f);

    let img = inp.image();
    let run = |s: &mut Session,
               what: &str,
               region: Region,
               opts: &DescribeOptions,
               want: &str,
               substr: &str,
               f: &mut Vec<String>| {
        let r = s.describe(&img, &region, opts);
        check_err(what, r, want, substr, f);
        recover(s, what, f);
    };

    // Regions.
    let small = vec![1u8; 10 * 10];
    let small_view = ImageView::new(&small, 10, 10, 10, PixelFormat::Gray8).unwrap();
    run(
        &mut s,
        "mask of another size",
        Region::Mask(small_view),
        &greedy,
        "InvalidRegion",
        &format!("mask is 10x10 but the image is {w}x{h}"),
        f,
    );
    let empty = vec![0u8; (w * h) as usize];
    let empty_view = ImageView::new(&empty, w, h, w as usize, PixelFormat::Gray8).unwrap();
    run(
        &mut s,
        "empty mask",
        Region::Mask(empty_view),
        &greedy,
        "InvalidRegion",
        "region is empty",
        f,
    );
    let bx = |x0: f32, y0: f32, x1: f32, y1: f32| Region::Box {
        x0,
        y0,
        x1,
        y1,
        normalized: false,
    };
    let (fw, fh) = (w as f32, h as f32);
    run(
        &mut s,
        "box outside the image",
        bx(fw + 5.0, 0.0, fw + 50.0, fh),
        &greedy,
        "InvalidRegion",
        "region is empty",
        f,
    );
    run(
        &mut s,
        "box above the image",
        bx(0.0, -100.0, fw, -10.0),
        &greedy,
        "InvalidRegion",
        "region is empty",
        f,
    );
    run(
        &mut s,
        "inverted box",
        bx(20.0, 20.0, 10.0, 30.0),
        &greedy,
        "InvalidRegion",
        "inverted",
        f,
    );
    run(
        &mut s,
        "NaN box",
        bx(f32::NAN, 0.0, 10.0, 10.0),
        &greedy,
        "InvalidRegion",
        "non-finite",
        f,
    );
    run(
        &mut s,
        "infinite box",
        bx(0.0, 0.0, f32::INFINITY, 10.0),
        &greedy,
        "InvalidRegion",
        "non-finite",
        f,
    );
    run(
        &mut s,
        "zero-area box",
        bx(10.0, 10.0, 10.0, 30.0),
        &greedy,
        "InvalidRegion",
        "region is empty",
        f,
    );
    let scribble = |points: Vec<(f32, f32)>, width: f32| Region::Scribble {
        points,
        width,
        normalized: false,
    };
    run(
        &mut s,
        "scribble with 0 points",
        scribble(vec![], 5.0),
        &greedy,
        "InvalidRegion",
        "scribble has no points",
        f,
    );
    run(
        &mut s,
        "scribble width 0",
        scribble(vec![(5.0, 5.0)], 0.0),
        &greedy,
        "InvalidArgument",
        "scribble width 0 must be finite and > 0",
        f,
    );
    run(
        &mut s,
        "scribble width NaN",
        scribble(vec![(5.0, 5.0)], f32::NAN),
        &greedy,
        "InvalidArgument",
        "scribble width NaN",
        f,
    );
    run(
        &mut s,
        "scribble NaN point",
        scribble(vec![(5.0, 5.0), (f32::NAN, 1.0)], 3.0),
        &greedy,
        "InvalidRegion",
        "non-finite point",
        f,
    );
    run(
        &mut s,
        "scribble outside",
        scribble(vec![(-500.0, -500.0), (-400.0, -450.0)], 3.0),
        &greedy,
        "InvalidRegion",
        "region is empty",
        f,
    );
    run(
        &mut s,
        "alpha of an RGB image",
        Region::AlphaOfImage,
        &greedy,
        "InvalidRegion",
        "no alpha channel",
        f,
    );
    run(
        &mut s,
        "points",
        Region::Points(vec![(1.0, 1.0, true)]),
        &greedy,
        "UnsupportedRegion",
        "segmenter",
        f,
    );

    // Options.
    let region = inp.region();
    let long_query = "Describe the apple on the left and the pear on the right. ".repeat(400);
    let opt_cases: Vec<(&str, DescribeOptions, &str, &str)> = vec![
        (
            "max_new_tokens 0",
            DescribeOptions {
                max_new_tokens: 0,
                ..greedy.clone()
            },
            "InvalidArgument",
            "max_new_tokens must be at least 1",
        ),
        (
            "temperature NaN",
            DescribeOptions {
                temperature: f32::NAN,
                ..greedy.clone()
            },
            "InvalidArgument",
            "temperature NaN",
        ),
        (
            "temperature negative",
            DescribeOptions {
                temperature: -0.5,
                ..greedy.clone()
            },
            "InvalidArgument",
            "temperature -0.5",
        ),
        (
            "temperature infinite",
            DescribeOptions {
                temperature: f32::INFINITY,
                ..greedy.clone()
            },
            "InvalidArgument",
            "temperature inf",
        ),
        (
            "top_p 0",
            DescribeOptions {
                temperature: 0.7,
                top_p: 0.0,
                ..greedy.clone()
            },
            "InvalidArgument",
            "top_p 0",
        ),
        (
            "top_p NaN",
            DescribeOptions {
                top_p: f32::NAN,
                ..greedy.clone()
            },
            "InvalidArgument",
            "top_p NaN",
        ),
        (
            "top_p above 1",
            DescribeOptions {
                top_p: 1.5,
                ..greedy.clone()
            },
            "InvalidArgument",
            "top_p 1.5",
        ),
        (
            "query with <image>",
            DescribeOptions {
                query: Some("What is <image> here?".into()),
                ..greedy.clone()
            },
            "InvalidArgument",
            "must not contain <image>",
        ),
        (
            "query beyond the context",
            DescribeOptions {
                query: Some(long_query.clone()),
                ..greedy.clone()
            },
            "ContextOverflow",
            "the context 2048",
        ),
        (
            "length control beyond the context",
            DescribeOptions {
                query: Some(long_query),
                length: Some(LengthControl::AboutWords(u32::MAX)),
                ..greedy.clone()
            },
            "ContextOverflow",
            "positions",
        ),
    ];
    for (what, opts, want, substr) in opt_cases {
        run(&mut s, what, region.clone(), &opts, want, substr, f);
    }

    // Video: too many frames, no frame, a bad frame among good ones.
    let frame = Frame {
        image: img,
        region: region.clone(),
    };
    let nine = vec![frame.clone(); 9];
    check_err(
        "9 video frames",
        s.describe_video(&nine, &greedy, &mut |_| true),
        "InvalidArgument",
        "9 frames given, the model takes at most 8",
        f,
    );
    recover(&mut s, "9 frames", f);
    check_err(
        "0 video frames",
        s.describe_video(&[], &greedy, &mut |_| true),
        "InvalidArgument",
        "no frame given",
        f,
    );
    recover(&mut s, "0 frames", f);
    let mut bad = vec![frame.clone(); 3];
    bad[1].region = Region::Mask(small_view);
    check_err(
        "video frame with a mismatched mask",
        s.describe_video(&bad, &greedy, &mut |_| true),
        "InvalidRegion",
        "frame 1: mask is 10x10",
        f,
    );
    recover(&mut s, "video with a bad frame", f);
    let all_empty = vec![
        Frame {
            image: img,
            region: Region::Mask(empty_view)
        };
        2
    ];
    check_err(
        "video of empty masks",
        s.describe_video(&all_empty, &greedy, &mut |_| true),
        "InvalidRegion",
        "every frame's region is empty",
        f,
    );
    recover(&mut s, "video of empty masks", f);

    // Odd but valid values do not fail (and do not panic).
    let odd: Vec<(&str, DescribeOptions)> = vec![
        (
            "top_k negative",
            DescribeOptions {
                temperature: 0.8,
                top_k: i32::MIN,
                max_new_tokens: 4,
                ..Default::default()
            },
        ),
        (
            "top_p 1 and huge top_k",
            DescribeOptions {
                temperature: 5.0,
                top_p: 1.0,
                top_k: i32::MAX,
                max_new_tokens: 4,
                ..Default::default()
            },
        ),
        (
            "tiny temperature",
            DescribeOptions {
                temperature: f32::MIN_POSITIVE,
                max_new_tokens: 4,
                ..Default::default()
            },
        ),
        (
            "empty query",
            DescribeOptions {
                query: Some(String::new()),
                max_new_tokens: 4,
                ..greedy.clone()
            },
        ),
    ];
    for (what, opts) in odd {
        if let Err(e) = s.describe(&img, &region, &opts) {
            f.push(format!("{what}: {e}"));
        }
        recover(&mut s, what, f);
    }
    // max_new_tokens usize::MAX: stopped by the callback.
    let mut n = 0;
    let r = s.describe_stream(
        &img,
        &region,
        &DescribeOptions {
            max_new_tokens: usize::MAX,
            ..greedy.clone()
        },
        &mut |_| {
            n += 1;
            n < 3
        },
    );
    if let Err(e) = r {
        f.push(format!("max_new_tokens usize::MAX: {e}"));
    }
    recover(&mut s, "max_new_tokens usize::MAX", f);
    // A normalized box far outside, and a box larger than the image (clipped: valid).
    run(
        &mut s,
        "normalized box outside",
        Region::Box {
            x0: 2.0,
            y0: 2.0,
            x1: 3.0,
            y1: 3.0,
            normalized: true,
        },
        &greedy,
        "InvalidRegion",
        "region is empty",
        f,
    );
    if let Err(e) = s.describe(&img, &bx(-1e30, -1e30, 1e30, 1e30), &greedy) {
        f.push(format!("huge box: {e}"));
    }
    recover(&mut s, "huge box", f);

    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// LLM files that are odd but usable: dam's check accepts them, and they
/// must load and describe in process (llama.cpp survives each of them, see
/// `llama_cpp_alone_on_the_llm_corpus`).
fn llm_accepted_variants(llm: &Path) -> Corpus {
    let mut c = Corpus::new(Kind::Llm, llm);
    let types = |v: i32| V::Arr(5, vec![V::I32(v); 1000]);
    c.edit("token_types_all_control", "", |g| {
        g.set("tokenizer.ggml.token_type", types(3))
    });
    c.edit("token_types_all_unused", "", |g| {
        g.set("tokenizer.ggml.token_type", types(5))
    });
    c.edit("token_types_unknown_value", "", |g| {
        g.set("tokenizer.ggml.token_type", types(-7))
    });
    c.edit("scores_as_i32", "", |g| {
        g.set("tokenizer.ggml.scores", V::Arr(5, vec![V::I32(-1); 1000]))
    });
    c.edit("tokens_with_empty_entries", "", |g| {
        let i = g.key("tokenizer.ggml.tokens");
        if let V::Arr(_, a) = &mut g.kv[i].1 {
            a[700] = V::s("");
            a[701] = V::s("");
        }
    });
    c.edit("rope_scaling_yarn", "", |g| {
        g.set("llama.rope.scaling.type", V::s("yarn"))
    });
    c.edit("rope_scaling_longrope", "", |g| {
        g.set("llama.rope.scaling.type", V::s("longrope"))
    });
    c.edit("rope_freq_base_huge", "", |g| {
        g.set("llama.rope.freq_base", V::F32(3e38))
    });
    c.edit("eos_equals_bos", "", |g| {
        g.set("tokenizer.ggml.eos_token_id", V::U32(1))
    });
    c.edit("no_output_weight", "", |g| g.remove_tensor("output.weight"));
    c.edit("f16_matrix", "", |g| {
        to_f16(g.tensor("blk.0.ffn_down.weight"))
    });
    c.edit("context_length_u32_max", "", |g| {
        g.set("llama.context_length", V::U32(u32::MAX))
    });
    c.edit("no_optional_keys", "", |g| {
        for k in [
            "llama.vocab_size",
            "llama.attention.head_count_kv",
            "llama.attention.key_length",
            "llama.attention.value_length",
            "llama.rope.dimension_count",
            "llama.rope.freq_base",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.padding_token_id",
        ] {
            g.remove_key(k);
        }
    });
    c.edit("unknown_keys_and_alignment_64", "", |g| {
        g.set("test.array_of_strings", V::Arr(8, vec![V::s("x"); 3]));
        g.set("test.f64", V::F64(f64::NAN));
        g.set("general.alignment", V::U32(64));
        g.align = 64;
    });
    c
}

#[test]
fn odd_but_valid_llm_files_load_and_describe() {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let dir = scratch("accepted");
    let inp = Inputs::load("tiny", "c4");
    let opts = DescribeOptions {
        max_new_tokens: 8,
        ..DescribeOptions::greedy()
    };
    let mut failures = Vec::new();
    for case in llm_accepted_variants(&llm).cases {
        use std::io::Write;
        println!("[{}]", case.name);
        std::io::stdout().flush().ok();
        let p = dir.join(format!("{}.gguf", case.name));
        std::fs::write(&p, &case.bytes).unwrap();
        let r = Model::load(&p, &vision, params())
            .and_then(|m| m.session())
            .and_then(|mut s| s.describe(&inp.image(), &inp.region(), &opts));
        match r {
            Ok(c) => println!("    -> {} tokens {:?}", c.tokens.len(), c.text),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Diagnostic, not run by default: what llama.cpp alone does with each LLM
/// file of the corpus and each accepted variant (dam's check bypassed).
/// Each file is loaded, given a context, and used to tokenize and decode a
/// few tokens in a child process, so that an abort only ends the child.
/// `cargo test --release --test hostile -- --ignored --nocapture llama_cpp_alone`
#[test]
#[ignore]
fn llama_cpp_alone_on_the_llm_corpus() {
    use dam::llama::{ContextParams, FlashAttn, KvType, LlamaContext, LlamaModel};
    use std::os::unix::process::ExitStatusExt;
    if let Some(p) = std::env::var_os("DAM_PROBE_FILE") {
        let run = || -> dam::Result<()> {
            let m = std::sync::Arc::new(LlamaModel::load(Path::new(&p), &Default::default())?);
            let cp = ContextParams {
                n_ctx: 64,
                n_batch: 64,
                n_threads: 1,
                type_k: KvType::F32,
                type_v: KvType::F32,
                flash_attn: FlashAttn::Off,
                n_seq_max: 1,
                gpu_offload: true,
            };
            let mut ctx = LlamaContext::new(&m, &cp)?;
            let ids = m.tokenize("A red apple, 東京 揺 \u{1F34E}.\n", true, false)?;
            ctx.decode_tokens(&ids, 0, true)?;
            Ok(())
        };
        match run() {
            Ok(()) => println!("PROBE: loads and decodes"),
            Err(e) => println!("PROBE: error: {e}"),
        }
        return;
    }
    let (llm, _) = converted("tiny", GgmlType::F32);
    let dir = scratch("probe");
    let exe = std::env::current_exe().unwrap();
    let cases = llm_corpus(&llm)
        .cases
        .into_iter()
        .chain(llm_accepted_variants(&llm).cases);
    for case in cases {
        let p = dir.join(format!("{}.gguf", case.name));
        std::fs::write(&p, &case.bytes).unwrap();
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "llama_cpp_alone_on_the_llm_corpus",
                "--ignored",
                "--nocapture",
            ])
            .env("DAM_PROBE_FILE", &p)
            .output()
            .unwrap();
        let verdict = match out.status.signal() {
            Some(sig) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let why = stderr
                    .lines()
                    .find(|l| l.contains("GGML_ASSERT") || l.contains("fatal"))
                    .unwrap_or("")
                    .rsplit("llama.cpp/")
                    .next()
                    .unwrap_or("")
                    .to_string();
                format!("CRASH (signal {sig}) {why}")
            }
            None => String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("PROBE: "))
                .unwrap_or("no verdict")
                .chars()
                .take(100)
                .collect(),
        };
        println!("{:28} {verdict}", case.name);
    }
    std::fs::remove_dir_all(&dir).ok();
}
