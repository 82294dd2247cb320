//! Reading a Hugging Face checkpoint folder: JSON configs with lookup chains
//! and safetensors files (single or sharded), one tensor at a time.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::sys::MappedFile;

fn conv(msg: String) -> Error {
    Error::Convert(msg)
}

/// Reads and parses a JSON file; a missing file is an error naming it.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let bytes =
        std::fs::read(path).map_err(|e| conv(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| conv(format!("{}: invalid JSON: {e}", path.display())))
}

/// Reads a JSON file if it exists.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A config seen through a lookup chain: the sub-folder's config.json first,
/// then the matching `*_cfg` dict of the top-level config.json.
pub(crate) struct Cfg {
    /// Where the values come from, for messages (`vision_tower/config.json`).
    pub what: String,
    layers: Vec<Value>,
}

impl Cfg {
    pub fn new(what: impl Into<String>, layers: Vec<Value>) -> Cfg {
        Cfg {
            what: what.into(),
            layers,
        }
    }

    /// The first non-null value of `key` along the chain.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.layers
            .iter()
            .filter_map(|l| l.get(key))
            .find(|v| !v.is_null())
    }

    /// Whether `key` is present and non-null.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn missing(&self, key: &str) -> Error {
        conv(format!("{}: missing key \"{key}\"", self.what))
    }

    fn bad(&self, key: &str, v: &Value, want: &str) -> Error {
        conv(format!("{}: \"{key}\" = {v} is not {want}", self.what))
    }

    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| self.bad(key, v, "an unsigned 32-bit integer"))
    }

    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32> {
        if self.has(key) {
            self.u32(key)
        } else {
            Ok(default)
        }
    }

    pub fn i32(&self, key: &str) -> Result<i32> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_i64()
            .and_then(|x| i32::try_from(x).ok())
            .ok_or_else(|| self.bad(key, v, "a 32-bit integer"))
    }

    /// An optional integer id (absent, null or negative -> None).
    pub fn opt_id(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let x = v.as_i64().ok_or_else(|| self.bad(key, v, "an integer"))?;
                Ok(u32::try_from(x).ok())
            }
        }
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        match v.as_f64() {
            Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(x as f32),
            _ => Err(self.bad(key, v, "a finite number")),
        }
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        if self.has(key) {
            self.f32(key)
        } else {
            Ok(default)
        }
    }

    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_str().ok_or_else(|| self.bad(key, v, "a string"))
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str> {
        if self.has(key) {
            self.str(key)
        } else {
            Ok(default)
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, v, "a boolean")),
        }
    }
}

/// The safetensors files of one checkpoint folder, memory-mapped.
pub(crate) struct Shards {
    pub dir: PathBuf,
    files: Vec<(String, MappedFile)>,
    /// From `model.safetensors.index.json`: tensor name -> file name.
    weight_map: Option<HashMap<String, String>>,
}

pub(crate) const INDEX: &str = "model.safetensors.index.json";
pub(crate) const SINGLE: &str = "model.safetensors";

impl Shards {
    /// Maps `dir/model.safetensors`, or every file named by
    /// `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Shards> {
        let index = dir.join(INDEX);
        let single = dir.join(SINGLE);
        let (names, weight_map) = if index.exists() {
            let j = read_json(&index)?;
            let wm = j
                .get("weight_map")
                .and_then(|w| w.as_object())
                .ok_or_else(|| conv(format!("{}: no \"weight_map\" object", index.display())))?;
            let mut map = HashMap::new();
            let mut files = BTreeSet::new();
            for (k, v) in wm {
                let f = v.as_str().ok_or_else(|| {
                    conv(format!(
                        "{}: weight_map[\"{k}\"] is not a file name",
                        index.display()
                    ))
                })?;
                if f.contains('/') || f.contains('\\') || f == ".." || f.is_empty() {
                    return Err(conv(format!(
                        "{}: bad shard file name {f:?}",
                        index.display()
                    )));
                }
                files.insert(f.to_string());
                map.insert(k.clone(), f.to_string());
            }
            (files.into_iter().collect::<Vec<_>>(), Some(map))
        } else if single.exists() {
            (vec![SINGLE.to_string()], None)
        } else {
            return Err(conv(format!(
                "{}: neither {SINGLE} nor {INDEX} found",
                dir.display()
            )));
        };
        let mut files = Vec::with_capacity(names.len());
        for n in names {
            let p = dir.join(&n);
            if !p.exists() {
                return Err(conv(format!(
                    "{}: shard {n} listed in {INDEX} is missing",
                    dir.display()
                )));
            }
            files.push((n, MappedFile::open(&p)?));
        }
        Ok(Shards {
            dir: dir.to_path_buf(),
            files,
            weight_map,
        })
    }

    /// Parses every file's header (the data stays in the mapping).
    pub fn tensors(&self) -> Result<Tensors<'_>> {
        let mut sts = Vec::with_capacity(self.files.len());
        let mut where_ = HashMap::new();
        for (i, (_, m)) in self.files.iter().enumerate() {
            let st = SafeTensors::deserialize(m.bytes()).map_err(|e| {
                conv(format!(
                    "{}: not a valid safetensors file: {e:?}",
                    m.path.display()
                ))
            })?;
            for name in st.names() {
                if where_.insert(name.clone(), i).is_some() {
                    return Err(conv(format!(
                        "{}: tensor {name} appears in two shards",
                        self.dir.display()
                    )));
                }
            }
            sts.push(st);
        }
        if let Some(wm) = &self.weight_map {
            for (name, file) in wm {
                let ok = where_
                    .get(name)
                    .and_then(|&i| self.files.get(i))
                    .is_some_and(|(f, _)| f == file);
                if !ok {
                    return Err(conv(format!(
                        "{}: {INDEX} puts {name} in {file}, but it is not there",
                        self.dir.display()
                    )));
                }
            }
        }
        Ok(Tensors {
            dir: self.dir.clone(),
            sts,
            where_,
        })
    }
}

/// The tensors of one folder, by name.
pub(crate) struct Tensors<'a> {
    dir: PathBuf,
    sts: Vec<SafeTensors<'a>>,
    where_: HashMap<String, usize>,
}

/// Shape and dtype of a tensor, without its data.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
}

impl<'a> Tensors<'a> {
    pub fn folder(&self) -> String {
        self.dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.where_.keys()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.where_.contains_key(name)
    }

    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'a>> {
        let i = *self
            .where_
            .get(name)
            .ok_or_else(|| conv(format!("{}: missing tensor {name}", self.folder())))?;
        let st = self
            .sts
            .get(i)
            .ok_or_else(|| conv(format!("{}: internal shard index", self.folder())))?;
        st.tensor(name)
            .map_err(|e| conv(format!("{}: tensor {name}: {e:?}", self.folder())))
    }

    pub fn meta(&self, name: &str) -> Result<Meta> {
        let v = self.view(name)?;
        Ok(Meta {
            shape: v.shape().to_vec(),
            dtype: v.dtype(),
        })
    }

    /// The tensor's values as f32 (F32 / F16 / BF16 sources), row-major.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let v = self.view(name)?;
        let n = v
            .shape()
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| conv(format!("{}: tensor {name}: shape overflows", self.folder())))?;
        let data = v.data();
        let width = match v.dtype() {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            d => return Err(unsupported_dtype(&self.folder(), name, d)),
        };
        if n.checked_mul(width) != Some(data.len()) {
            return Err(conv(format!(
                "{}: tensor {name}: {} data bytes for shape {:?}",
                self.folder(),
                data.len(),
                v.shape()
            )));
        }
        Ok(match v.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }
}

/// The error for a tensor stored in a type the converter does not read.
pub(crate) fn unsupported_dtype(folder: &str, name: &str, d: Dtype) -> Error {
    conv(format!(
        "{folder}: tensor {name} has dtype {d:?}; only F32, F16 and BF16 are supported"
    ))
}

/// Checks a tensor's dtype is one we read (before any file is written).
pub(crate) fn check_dtype(folder: &str, name: &str, m: &Meta) -> Result<()> {
    match m.dtype {
        Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
        d => Err(unsupported_dtype(folder, name, d)),
    }
}
