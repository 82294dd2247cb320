//! The bodies of dam's fuzz targets. cargo-fuzz runs them under libFuzzer
//! (fuzz/fuzz_targets/*.rs); `tests/fuzz_corpus.rs` replays the committed
//! corpus through the same code on stable Rust in every test run.
//!
//! Each target feeds arbitrary bytes to a public entry point and only
//! requires that it returns (an `Ok` or an error): a panic, an abort, a
//! sanitizer report or a hang is a finding.
#![allow(dead_code)]

use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use dam::capi::*;
use dam::gguf_file::GgufHeader;
use dam::segmenter::{Point, PointLabel, Prompt, Segmenter};
use dam::GgmlType;
use dam::{ImageView, Model, ModelParams, PixelFormat, Region};

/// The repository root (fixtures and the converted tiny model live there).
fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("tests/fixtures").is_dir() {
        here.to_path_buf()
    } else {
        here.join("..")
    }
}

/// The tiny fixture model converted to f32 once per process:
/// (llm path, vision path).
pub fn tiny() -> &'static (PathBuf, PathBuf) {
    static TINY: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TINY.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("dam-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&out).expect("temp dir");
        let ck = root().join("tests/fixtures/tiny/checkpoint");
        let r = dam::convert::convert(&ck, &out, GgmlType::F32, "tiny", &Default::default())
            .expect("convert the tiny fixture model");
        (r.llm_path, r.vision_path)
    })
}

/// The two segmenter fixtures (SAM's ViT, MobileSAM's TinyViT) converted
/// to f32 once per process.
pub fn segmenters() -> &'static [PathBuf; 2] {
    static SEG: OnceLock<[PathBuf; 2]> = OnceLock::new();
    SEG.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("dam-fuzz-seg-{}", std::process::id()));
        std::fs::create_dir_all(&out).expect("temp dir");
        ["sam-tiny", "mobilesam-tiny"].map(|set| {
            let ck = root()
                .join("tests/fixtures/segmenter")
                .join(set)
                .join("checkpoint");
            dam::convert::convert_segmenter(&ck, &out, GgmlType::F32, set, false)
                .expect("convert a segmenter fixture")
                .path
        })
    })
}

/// A little-endian reader over the fuzz input that yields zeros when the
/// input runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// A coordinate: mostly small sensible values, sometimes any f32 (NaN,
    /// infinities, huge).
    fn coord(&mut self) -> f32 {
        match self.u8() % 4 {
            0 => self.f32(),
            _ => self.u16() as f32 / 256.0 - 16.0,
        }
    }
    /// `n` bytes (cycling the remaining input, zeros when none is left).
    fn fill(&mut self, n: usize) -> Vec<u8> {
        let src = self.0;
        if src.is_empty() {
            return vec![0; n];
        }
        (0..n).map(|i| src[i % src.len()]).collect()
    }
}

// ---------------------------------------------------------------- GGUF files

/// First byte: which half of the model the rest is (even = LLM file, odd =
/// vision file). The bytes go through dam's GGUF reader alone, then are
/// written to a file and loaded with the valid other half of the tiny
/// model, through `Model::load` (dam's validation, then ggml / llama.cpp).
pub fn gguf_load(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let _ = GgufHeader::parse(bytes, "fuzz");
    let (llm, vision) = tiny();
    let dir = llm.parent().expect("model dir");
    let is_llm = kind % 2 == 0;
    let path = dir.join(if is_llm {
        "fuzz-llm-input.gguf"
    } else {
        "fuzz-vision-input.gguf"
    });
    std::fs::write(&path, bytes).expect("write the input");
    let (l, v) = if is_llm {
        (path.as_path(), vision.as_path())
    } else {
        (llm.as_path(), path.as_path())
    };
    let params = ModelParams {
        threads: 1,
        n_ctx: 64,
        ..Default::default()
    };
    if let Ok(m) = Model::load(l, v, params) {
        // A file that loads must also give a working session.
        let _ = m.session();
    }
}

// ---------------------------------------------------------------- preprocessing

fn format(b: u8) -> PixelFormat {
    match b % 4 {
        0 => PixelFormat::Rgb8,
        1 => PixelFormat::Rgba8,
        2 => PixelFormat::Bgra8,
        _ => PixelFormat::Gray8,
    }
}

/// An image of arbitrary size (0..=300 per side), format and stride (some
/// strides shorter than a row), a region of any kind with arbitrary
/// coordinates, then rasterisation, the focal window and both views.
pub fn preprocess(data: &[u8]) {
    let mut b = Bytes(data);
    let (w, h) = (b.u16() as u32 % 301, b.u16() as u32 % 301);
    let fmt = format(b.u8());
    let bpp = fmt.bytes_per_pixel();
    let row = w as usize * bpp;
    let stride = match b.u8() % 4 {
        0 => row.saturating_sub(1),
        1 => row + b.u8() as usize,
        _ => row,
    };
    let size = 14 * (1 + b.u8() as u32 % 28); // output side 14..=392
    let kind = b.u8();
    let (mw, mh) = match b.u8() % 8 {
        0 => (b.u16() as u32 % 301, b.u16() as u32 % 301),
        _ => (w, h),
    };
    let mfmt = format(b.u8());
    let coords = [b.coord(), b.coord(), b.coord(), b.coord()];
    let normalized = b.u8() % 2 == 1;
    let n_points = b.u8() as usize % 6;
    let points: Vec<(f32, f32)> = (0..n_points).map(|_| (b.coord(), b.coord())).collect();
    let brush = b.coord();
    let pixels = b.fill(stride * h as usize + row);
    let mask_px = b.fill(mw as usize * mh as usize * mfmt.bytes_per_pixel());

    let Ok(image) = ImageView::new(&pixels, w, h, stride, fmt) else {
        return;
    };
    let mask_view = ImageView::new(&mask_px, mw, mh, mw as usize * mfmt.bytes_per_pixel(), mfmt);
    let region = match kind % 5 {
        0 => match mask_view {
            Ok(m) => Region::Mask(m),
            Err(_) => return,
        },
        1 => Region::AlphaOfImage,
        2 => Region::Box {
            x0: coords[0],
            y0: coords[1],
            x1: coords[2],
            y1: coords[3],
            normalized,
        },
        3 => Region::Scribble {
            points,
            width: brush,
            normalized,
        },
        _ => Region::Points(points.iter().map(|&(x, y)| (x, y, true)).collect()),
    };
    let Ok(mask) = dam::region::rasterize(&region, &image) else {
        return;
    };
    let _ = dam::preprocess::focal_window(&mask);
    let rgb = image.to_rgb();
    let _ = dam::preprocess::make_views(&rgb, &mask, size, [0.5; 3], [0.5; 3]);
}

// ---------------------------------------------------------------- C ABI

/// A C image's declared sizes: width and height 0..=max, a pixel format
/// (also the invalid -1 and 4) and a stride (sometimes shorter than a row).
struct CImage {
    w: u32,
    h: u32,
    fmt_raw: i32,
    stride: usize,
}

impl CImage {
    fn read(b: &mut Bytes, max: u8) -> CImage {
        let side = u32::from(max) + 1;
        let (w, h) = (b.u8() as u32 % side, b.u8() as u32 % side);
        let fmt_raw = (b.u8() % 6) as i32 - 1;
        let row = Self::row_bytes(w, fmt_raw);
        let stride = match b.u8() % 4 {
            0 => row.saturating_sub(1),
            1 => row + b.u8() as usize % 8,
            _ => row,
        };
        CImage {
            w,
            h,
            fmt_raw,
            stride,
        }
    }

    /// Bytes of a row of `w` pixels of the C format `fmt_raw` (1 per
    /// pixel for the invalid ones).
    fn row_bytes(w: u32, fmt_raw: i32) -> usize {
        let bpp = match fmt_raw {
            0 => 3,
            1 | 2 => 4,
            _ => 1,
        };
        w as usize * bpp
    }

    /// Pixel bytes to hand over: more than the header requires.
    fn fill(&self, b: &mut Bytes) -> Vec<u8> {
        let row = Self::row_bytes(self.w, self.fmt_raw);
        b.fill(self.stride.max(row) * self.h as usize + 8)
    }

    fn view(&self, pixels: &[u8]) -> DamImageView {
        DamImageView {
            data: pixels.as_ptr(),
            width: self.w,
            height: self.h,
            stride_bytes: self.stride,
            format: self.fmt_raw,
        }
    }
}

/// A model and a session of the C API, shared by all runs of the process
/// (the session must stay usable after every error).
struct Handles {
    session: *mut DamSession,
}

// SAFETY: the session is only used under the mutex below, by one thread at
// a time, which the C API allows.
unsafe impl Send for Handles {}

fn handles() -> &'static Mutex<Handles> {
    static H: OnceLock<Mutex<Handles>> = OnceLock::new();
    H.get_or_init(|| {
        let (llm, vision) = tiny();
        let l = CString::new(llm.to_str().expect("utf-8 path")).expect("path");
        let v = CString::new(vision.to_str().expect("utf-8 path")).expect("path");
        let mut mp = dam_model_default_params();
        mp.n_threads = 1;
        mp.n_ctx = 512;
        let mut model = std::ptr::null_mut();
        let mut session = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated paths, params and out pointers; the
        // model is kept alive by the session (the C API's rule).
        unsafe {
            assert_eq!(
                dam_model_load(DAM_API_VERSION, l.as_ptr(), v.as_ptr(), &mp, &mut model),
                DamStatus::Ok
            );
            assert_eq!(
                dam_session_new(model, std::ptr::null(), &mut session),
                DamStatus::Ok
            );
            dam_model_free(model);
        }
        Mutex::new(Handles { session })
    })
}

unsafe extern "C" fn on_token(_piece: *const c_char, _len: usize, user: *mut c_void) -> bool {
    // SAFETY: `user` is the &mut u32 counter passed by `capi_describe`.
    let n = unsafe { &mut *(user as *mut u32) };
    *n += 1;
    *n < 3
}

unsafe extern "C" fn on_batch_token(
    _region: usize,
    _piece: *const c_char,
    _len: usize,
    _user: *mut c_void,
) -> bool {
    true
}

/// Arbitrary image bytes, sizes, strides, formats (also invalid values),
/// regions (also invalid kinds and struct sizes) and options through
/// `dam_describe` / `dam_describe_batch` on the tiny model. Every buffer
/// handed over is as large as the header says it must be for the declared
/// sizes, so a sanitizer report is dam's bug, not the harness's.
pub fn capi_describe(data: &[u8]) {
    let mut b = Bytes(data);
    let img = CImage::read(&mut b, 48);
    let (w, h) = (img.w, img.h);
    let n_regions = 1 + b.u8() as usize % 3;
    let batch = b.u8() % 3 == 0;
    let pixels = img.fill(&mut b);

    let mut masks = Vec::new();
    let mut points = Vec::new();
    let mut regions = Vec::new();
    for _ in 0..n_regions {
        let kind = (b.u8() % 7) as i32 - 1; // -1 and 5 are invalid
                                            // Never larger than the struct: the header lets dam read
                                            // `struct_size` bytes.
        let full = std::mem::size_of::<DamRegion>() as u32;
        let struct_size = match b.u8() % 16 {
            0 => b.u8() as u32 % (full + 1),
            _ => full,
        };
        let (mw, mh) = match b.u8() % 8 {
            0 => (b.u8() as u32 % 49, b.u8() as u32 % 49),
            _ => (w, h),
        };
        let mask = b.fill(mw as usize * mh as usize + 1);
        let n_points = b.u8() as usize % 5;
        let pts: Vec<DamPoint> = (0..n_points)
            .map(|_| DamPoint {
                x: b.coord(),
                y: b.coord(),
            })
            .collect();
        let mut r = zeroed_region();
        r.struct_size = struct_size;
        r.kind = kind;
        r.normalized = i32::from(b.u8() % 2);
        r.brush_width = b.coord();
        (r.x0, r.y0, r.x1, r.y1) = (b.coord(), b.coord(), b.coord(), b.coord());
        r.mask = DamImageView {
            data: std::ptr::null(),
            width: mw,
            height: mh,
            stride_bytes: mw as usize,
            format: 3,
        };
        r.n_points = n_points;
        masks.push(mask);
        points.push(pts);
        regions.push(r);
    }
    // Point the regions at their buffers now that they no longer move.
    for (k, r) in regions.iter_mut().enumerate() {
        r.mask.data = masks[k].as_ptr();
        r.points = if points[k].is_empty() {
            std::ptr::null()
        } else {
            points[k].as_ptr()
        };
    }
    // Batches need one element size for all regions.
    if batch {
        let s = regions[0].struct_size;
        for r in &mut regions {
            r.struct_size = s;
        }
    }

    let mut o = dam_describe_options_default();
    o.max_new_tokens = b.u8() as u32 % 5; // 0 is invalid
    o.temperature = match b.u8() % 3 {
        0 => b.f32(),
        1 => 0.0,
        _ => 0.7,
    };
    o.top_p = match b.u8() % 3 {
        0 => b.f32(),
        _ => 0.9,
    };
    o.top_k = (b.u8() as i32) - 100;
    o.seed = b.u8() as u32;
    o.length_kind = (b.u8() % 7) as i32 - 1;
    o.length_value = b.u8() as u32 % 4;
    let query = match b.u8() % 3 {
        0 => {
            let n = b.u8() as usize % 24;
            let mut q: Vec<u8> = b.fill(n).into_iter().filter(|&c| c != 0).collect();
            q.truncate(n);
            Some(CString::new(q).expect("no NUL"))
        }
        _ => None,
    };
    o.query = query.as_ref().map_or(std::ptr::null(), |q| q.as_ptr());

    let image = img.view(&pixels);
    let hs = handles().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = [0 as c_char; 256];
    let mut len = 0usize;
    let mut pieces = 0u32;
    // SAFETY: every pointer is valid for the size the header requires for
    // the values declared next to it (images and masks hold
    // `stride * (height - 1) + width * bpp` bytes or more, points arrays
    // `n_points` entries); the session is used by this thread only.
    unsafe {
        if batch {
            let st = dam_describe_batch(
                hs.session,
                &image,
                regions.as_ptr(),
                regions.len(),
                &o,
                Some(on_batch_token),
                std::ptr::null_mut(),
            );
            if st == DamStatus::Ok {
                let n = dam_session_caption_count(hs.session);
                assert_eq!(n, regions.len());
                for k in 0..n {
                    dam_session_caption(hs.session, k, out.as_mut_ptr(), out.len(), &mut len);
                }
            }
        } else {
            dam_describe(
                hs.session,
                &image,
                regions.as_ptr(),
                &o,
                Some(on_token),
                (&mut pieces as *mut u32).cast(),
                out.as_mut_ptr(),
                out.len(),
                &mut len,
            );
        }
        dam_session_last_caption(hs.session, out.as_mut_ptr(), 8, &mut len);
    }
}

fn zeroed_region() -> DamRegion {
    DamRegion {
        struct_size: std::mem::size_of::<DamRegion>() as u32,
        kind: 0,
        normalized: 0,
        brush_width: 0.0,
        x0: 0.0,
        y0: 0.0,
        x1: 0.0,
        y1: 0.0,
        mask: DamImageView {
            data: std::ptr::null(),
            width: 0,
            height: 0,
            stride_bytes: 0,
            format: 0,
        },
        points: std::ptr::null(),
        n_points: 0,
        point_labels: std::ptr::null(),
    }
}

// ---------------------------------------------------------------- segmenters

/// The bytes are a segmenter file: dam's GGUF reader alone, then
/// `Segmenter::load` (dam's validation, then ggml). A file that loads must
/// also segment a small image with a click and a box (a mask or an error).
pub fn segmenter_load(data: &[u8]) {
    let _ = GgufHeader::parse(data, "fuzz");
    let dir = segmenters()[0].parent().expect("segmenter dir");
    let path = dir.join("fuzz-segmenter-input.gguf");
    std::fs::write(&path, data).expect("write the input");
    let Ok(mut seg) = Segmenter::load(&path, 1) else {
        return;
    };
    let pixels: Vec<u8> = (0..24 * 16 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let Ok(image) = ImageView::new(&pixels, 24, 16, 24 * 3, PixelFormat::Rgb8) else {
        return;
    };
    for prompt in [
        Prompt {
            points: vec![Point {
                x: 12.0,
                y: 8.0,
                label: PointLabel::Foreground,
            }],
            bbox: None,
            multimask: true,
        },
        Prompt {
            points: Vec::new(),
            bbox: Some([2.0, 2.0, 20.0, 14.0]),
            multimask: false,
        },
    ] {
        let _ = seg.segment(&image, &prompt);
    }
}

/// One loaded segmenter of each kind for `segment_prompt`, shared by all
/// runs of the process (each must stay usable after every error).
struct SegHandles([*mut DamSegmenter; 2]);

// SAFETY: the segmenters are only used under the mutex below; the C API
// also allows calls from any thread.
unsafe impl Send for SegHandles {}

fn seg_handles() -> &'static Mutex<SegHandles> {
    static H: OnceLock<Mutex<SegHandles>> = OnceLock::new();
    H.get_or_init(|| {
        let paths = segmenters();
        let load = |p: &PathBuf| {
            let c = CString::new(p.to_str().expect("utf-8 path")).expect("path");
            let mut s = std::ptr::null_mut();
            // SAFETY: a valid NUL-terminated path and out pointer.
            let st = unsafe { dam_segmenter_load(DAM_API_VERSION, c.as_ptr(), 1, &mut s) };
            assert_eq!(st, DamStatus::Ok);
            s
        };
        Mutex::new(SegHandles([load(&paths[0]), load(&paths[1])]))
    })
}

/// Arbitrary images (0..=64 per side, any format and stride, also invalid
/// ones), region kinds (also not a segmenter's), clicks with arbitrary
/// coordinates and labels (also invalid, or no label array), boxes,
/// multimask values, and mask and score buffers of any declared size
/// through `dam_segment`, twice in a row (the second call on the cached
/// embedding), on SAM or MobileSAM. Every buffer is as large as declared.
pub fn segment_prompt(data: &[u8]) {
    let mut b = Bytes(data);
    let which = usize::from(b.u8() % 2);
    let img = CImage::read(&mut b, 64);
    let (w, h) = (img.w, img.h);
    let pixels = img.fill(&mut b);
    let kind = match b.u8() % 8 {
        0 => DamRegionKind::Box as i32,
        1 => 9, // not a kind
        2..=4 => DamRegionKind::SegmentedBox as i32,
        _ => DamRegionKind::Points as i32,
    };
    let n_points = b.u8() as usize % 6;
    let points: Vec<DamPoint> = (0..n_points)
        .map(|_| DamPoint {
            x: b.coord().abs(),
            y: b.coord().abs(),
        })
        .collect();
    let labels: Vec<i32> = (0..n_points)
        .map(|_| match b.u8() % 8 {
            0 => b.u8() as i32 - 128,
            1..=2 => 0,
            _ => 1,
        })
        .collect();
    let mut r = zeroed_region();
    r.kind = kind;
    (r.x0, r.y0, r.x1, r.y1) = (b.coord().abs(), b.coord().abs(), b.coord(), b.coord());
    r.n_points = n_points;
    r.points = if points.is_empty() {
        std::ptr::null()
    } else {
        points.as_ptr()
    };
    r.point_labels = if b.u8() % 4 == 0 || labels.is_empty() {
        std::ptr::null()
    } else {
        labels.as_ptr()
    };
    let multimask = (b.u8() % 4) as i32 - 1; // -1 and 2 are invalid
    let need = w as usize * h as usize;
    let mask_size = match b.u8() % 8 {
        0 => need.saturating_sub(1),
        _ => need,
    };
    let mut mask = vec![0u8; mask_size.max(1)];
    let scores_cap = b.u8() as usize % 5;
    let mut scores = vec![0f32; scores_cap.max(1)];
    let image = img.view(&pixels);
    let hs = seg_handles().lock().unwrap_or_else(|e| e.into_inner());
    let (mut n, mut best) = (0usize, 0i32);
    for _ in 0..2 {
        // SAFETY: the image holds `stride * (height - 1) + width * bpp`
        // bytes or more, the region's arrays `n_points` entries, the mask
        // `mask_size` bytes and the scores `scores_cap` floats (both
        // buffers are at least that long); the segmenter is used by this
        // thread only.
        unsafe {
            dam_segment(
                hs.0[which],
                &image,
                &r,
                multimask,
                mask.as_mut_ptr(),
                mask_size,
                if scores_cap == 0 {
                    std::ptr::null_mut()
                } else {
                    scores.as_mut_ptr()
                },
                scores_cap,
                &mut n,
                &mut best,
            );
        }
    }
}
