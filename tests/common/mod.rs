//! Shared helpers of the integration tests: fixture access and one
//! conversion per (model, type) per test binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use dam::GgmlType;

pub mod cli;

pub const MODELS: [&str; 2] = ["tiny", "geom"];

/// What a test that misses a tool tells the user to run.
pub const SETUP: &str = "run the README's set-up line: bash scripts/setup.sh";

/// The Python of the tests that drive Python code: `$DAM_PYTHON`, else the
/// `.venv` of the README's set-up line, checked to import `modules` (a
/// missing one fails the test naming the set-up line).
pub fn python(modules: &str) -> PathBuf {
    let py = std::env::var_os("DAM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let probe = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output();
    match probe {
        Ok(o) if o.status.success() => py,
        Ok(o) => panic!(
            "{} cannot import {modules} ({SETUP}): {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("no Python at {} ({SETUP}): {e}", py.display()),
    }
}

/// The fixtures: `DAM_TEST_ROOT/tests/fixtures` when that variable is set
/// (a test binary carried to another machine, e.g. by
/// scripts/device-check.sh), else this checkout's.
pub fn fixtures() -> PathBuf {
    std::env::var_os("DAM_TEST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
}

/// The devices the parity tests run on, applied to `p`: the CPU, then the
/// main GPU (all LLM layers and the vision stage) when ggml has one.
/// `DAM_TEST_DEVICES=cpu` or `=gpu` keeps one (`gpu` fails without a GPU,
/// so a GPU run cannot silently test the CPU twice).
pub fn on_devices(p: dam::ModelParams) -> Vec<(&'static str, dam::ModelParams)> {
    let has_gpu = !dam::ggml::gpu_devices().is_empty();
    let want = std::env::var("DAM_TEST_DEVICES").unwrap_or_default();
    let mut v = Vec::new();
    if want.is_empty() || want.contains("cpu") {
        let cpu = dam::ModelParams {
            n_gpu_layers: 0,
            vision_device: dam::VisionDevice::Cpu,
            ..p.clone()
        };
        v.push(("cpu", cpu));
    }
    if want.contains("gpu") {
        assert!(has_gpu, "DAM_TEST_DEVICES asks for a GPU but ggml has none");
    }
    if has_gpu && (want.is_empty() || want.contains("gpu")) {
        let gpu = dam::ModelParams {
            n_gpu_layers: -1,
            vision_device: dam::VisionDevice::Gpu,
            ..p
        };
        v.push(("gpu", gpu));
    }
    v
}

/// Case names of a fixture model (from its cases/*.json).
pub fn cases(model: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixtures().join(model).join("cases"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "json")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

/// A float tensor of a case file.
pub struct Arr {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub struct Case {
    pub model: String,
    pub name: String,
    pub json: serde_json::Value,
    pub tensors: HashMap<String, Arr>,
    pub ids: HashMap<String, Vec<i64>>,
}

impl Case {
    pub fn load(model: &str, name: &str) -> Case {
        let dir = fixtures().join(model).join("cases");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let (tensors, ids) = read_safetensors(&dir.join(format!("{name}.safetensors")));
        Case {
            model: model.into(),
            name: name.into(),
            json,
            tensors,
            ids,
        }
    }

    pub fn dir(&self) -> PathBuf {
        fixtures().join(&self.model).join("cases")
    }

    pub fn frames(&self) -> usize {
        self.json["num_frames"].as_u64().unwrap() as usize
    }

    /// (image path, mask path) per frame.
    pub fn inputs(&self) -> Vec<(PathBuf, PathBuf)> {
        self.json["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    self.dir().join(i["image"].as_str().unwrap()),
                    self.dir().join(i["mask"].as_str().unwrap()),
                )
            })
            .collect()
    }

    pub fn t(&self, name: &str) -> &Arr {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}/{}: no tensor {name}", self.model, self.name))
    }

    /// Per-frame slices of a tensor with an optional leading frame axis.
    pub fn per_frame(&self, name: &str) -> Vec<&[f32]> {
        let a = self.t(name);
        let f = self.frames();
        let n = a.data.len() / f;
        a.data.chunks(n).collect()
    }
}

/// A fixture safetensors file: its f32 tensors and its i64 tensors (u8
/// ones widened to i64).
pub fn read_safetensors(
    path: &std::path::Path,
) -> (HashMap<String, Arr>, HashMap<String, Vec<i64>>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = HashMap::new();
    let mut ids = HashMap::new();
    for (k, v) in st.tensors() {
        let d = v.data();
        match v.dtype() {
            safetensors::Dtype::F32 => {
                let data = d
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                tensors.insert(
                    k.to_string(),
                    Arr {
                        shape: v.shape().to_vec(),
                        data,
                    },
                );
            }
            safetensors::Dtype::I64 => {
                let data = d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                ids.insert(k.to_string(), data);
            }
            safetensors::Dtype::U8 => {
                ids.insert(k.to_string(), d.iter().map(|&b| i64::from(b)).collect());
            }
            other => panic!("unexpected dtype {other:?}"),
        }
    }
    (tensors, ids)
}

/// How many leading tokens two sequences share.
pub fn agreeing(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// max |a - b| / max(1, max |b|): the fixtures' metric (b = reference).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut m = 0f64;
    let mut r = 1f64;
    for (x, y) in a.iter().zip(b) {
        m = m.max((*x as f64 - *y as f64).abs());
        r = r.max((*y as f64).abs());
    }
    m / r
}

pub fn max_abs_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

fn tmp_root() -> PathBuf {
    let p = std::env::temp_dir().join(format!("dam-tests-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Converts a fixture checkpoint once per (model, type) and returns
/// (llm path, vision path).
pub fn converted(model: &str, ty: GgmlType) -> (PathBuf, PathBuf) {
    type Cache = HashMap<(String, GgmlType), (PathBuf, PathBuf)>;
    static DONE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let m = DONE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    g.entry((model.to_string(), ty))
        .or_insert_with(|| {
            let out = tmp_root().join(format!("{model}-{}", ty.name()));
            std::fs::create_dir_all(&out).unwrap();
            let ck = fixtures().join(model).join("checkpoint");
            let r = dam::convert::convert(&ck, &out, ty, model, &Default::default()).unwrap();
            (r.llm_path, r.vision_path)
        })
        .clone()
}

/// Converts the sam-tiny segmenter fixture once per type and returns the
/// GGUF file's path.
pub fn converted_segmenter(ty: GgmlType) -> PathBuf {
    static DONE: OnceLock<Mutex<HashMap<GgmlType, PathBuf>>> = OnceLock::new();
    let m = DONE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    g.entry(ty)
        .or_insert_with(|| {
            let out = tmp_root().join(format!("sam-tiny-{}", ty.name()));
            let ck = fixtures().join("segmenter/sam-tiny/checkpoint");
            dam::convert::convert_segmenter(&ck, &out, ty, "sam-tiny", false)
                .unwrap()
                .path
        })
        .clone()
}

/// The images and masks of fixture cases (one per frame), and their frames
/// with mask regions, as the public API takes them.
pub struct Input {
    pub images: Vec<dam::RgbImage>,
    pub masks: Vec<dam::Mask>,
}

impl Input {
    pub fn load(model: &str, case: &str) -> Input {
        Input::of(&Case::load(model, case))
    }

    pub fn of(case: &Case) -> Input {
        let (mut images, mut masks) = (Vec::new(), Vec::new());
        for (i, m) in case.inputs() {
            images.push(dam::image::load_rgb(&i).unwrap());
            masks.push(dam::image::load_mask(&m).unwrap());
        }
        Input { images, masks }
    }

    /// Several single-frame cases as the frames of one video.
    pub fn video(model: &str, cases: &[&str]) -> Input {
        let mut v = Input {
            images: Vec::new(),
            masks: Vec::new(),
        };
        for c in cases {
            let i = Input::load(model, c);
            v.images.extend(i.images);
            v.masks.extend(i.masks);
        }
        v
    }

    pub fn frames(&self) -> Vec<dam::Frame<'_>> {
        use dam::Region;
        self.images
            .iter()
            .zip(&self.masks)
            .map(|(img, m)| dam::Frame {
                image: img.view().unwrap(),
                region: Region::Mask(m.view().unwrap()),
            })
            .collect()
    }
}
