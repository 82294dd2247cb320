//! Preprocessing parity with the reference: focal windows and the 8-channel
//! `pixel_values` of every fixture case (bit-exact), plus Pillow resize outputs for
//! other sizes (tests/fixtures/resize, made by make.py there).

use std::path::{Path, PathBuf};
use std::time::Instant;

use dam::image::{load_mask, load_rgb};
use dam::preprocess::{focal_window, make_views, make_views_threads, region_views, resize_bicubic};
use dam::{ImageView, PixelFormat, Region};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `image_mean` / `image_std` of the model's preprocessor config.
fn mean_std(model: &str) -> ([f32; 3], [f32; 3]) {
    let cfg = read_json(
        &fixtures()
            .join(model)
            .join("checkpoint/vision_tower/preprocessor_config.json"),
    );
    let three = |key: &str| -> [f32; 3] {
        let v: Vec<f32> = cfg[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing"))
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        [v[0], v[1], v[2]]
    };
    (three("image_mean"), three("image_std"))
}

/// `pixel_values` of a case as f32, with its shape.
fn pixel_values(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("pixel_values").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_case(model: &str, case: &str) {
    let dir = fixtures().join(model).join("cases");
    let meta = read_json(&dir.join(format!("{case}.json")));
    let (mean, std) = mean_std(model);
    let s = meta["image_size"].as_u64().unwrap() as u32;
    let frames = meta["num_frames"].as_u64().unwrap() as usize;
    let (shape, pix) = pixel_values(&dir.join(format!("{case}.safetensors")));
    let plane = (s * s) as usize;
    let per_frame = 8 * plane;
    if frames == 1 {
        assert_eq!(shape, vec![8, s as usize, s as usize]);
    } else {
        assert_eq!(shape, vec![frames, 8, s as usize, s as usize]);
    }
    let inputs = meta["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), frames);
    for (k, inp) in inputs.iter().enumerate() {
        let what = format!("{model}/{case} frame {k}");
        let image = load_rgb(dir.join(inp["image"].as_str().unwrap())).unwrap();
        let mask = load_mask(dir.join(inp["mask"].as_str().unwrap())).unwrap();
        assert_eq!(
            mask.count() as u64,
            inp["mask_pixels"].as_u64().unwrap(),
            "{what}: mask pixels"
        );
        let frame = &meta["frames"][k];
        let expect_win: Vec<u32> = frame["focal_window_xyxy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let win = focal_window(&mask).unwrap();
        assert_eq!(win.to_array().to_vec(), expect_win, "{what}: focal window");

        let views = make_views(&image, &mask, s, mean, std).unwrap();
        assert_eq!(views.window, win);
        let reference = &pix[k * per_frame..(k + 1) * per_frame];
        let (ref_full, ref_focal) = reference.split_at(4 * plane);
        let e_full = max_abs_diff(&views.full, ref_full);
        let e_focal = max_abs_diff(&views.focal, ref_focal);
        assert!(
            views.full == ref_full && views.focal == ref_focal,
            "{what}: pixel_values differ: max |err| full {e_full}, focal {e_focal} \
             (bound 2/255 = {})",
            2.0 / 255.0
        );
        let applied = frame["context_provider_applied"].as_bool().unwrap();
        assert_eq!(views.focal_is_full, !applied, "{what}: skip rule");

        // The same views read straight from a caller's BGRA buffer with padded
        // rows (no RGB copy), as a describe call does, on 2 threads.
        let (w, h) = (image.width as usize, image.height as usize);
        let stride = w * 4 + 12;
        let mut bgra = vec![0u8; stride * h];
        for (y, row) in image.data.chunks_exact(w * 3).enumerate() {
            for (x, p) in row.chunks_exact(3).enumerate() {
                let o = y * stride + x * 4;
                bgra[o..o + 4].copy_from_slice(&[p[2], p[1], p[0], 9]);
            }
        }
        let view = ImageView::new(&bgra, w as u32, h as u32, stride, PixelFormat::Bgra8).unwrap();
        let region = Region::Mask(mask.view().unwrap());
        let direct = region_views(&view, &region, s, mean, std, 2)
            .unwrap()
            .unwrap();
        assert_eq!(direct, views, "{what}: from the BGRA view");
    }
}

#[test]
fn tiny_c1() {
    check_case("tiny", "c1");
}

#[test]
fn tiny_c1_len20() {
    check_case("tiny", "c1_len20");
}

#[test]
fn tiny_c2() {
    check_case("tiny", "c2");
}

#[test]
fn tiny_c3() {
    check_case("tiny", "c3");
}

#[test]
fn tiny_c4() {
    check_case("tiny", "c4");
}

#[test]
fn tiny_c5() {
    check_case("tiny", "c5");
}

#[test]
fn tiny_v1() {
    check_case("tiny", "v1");
}

#[test]
fn geom_c1() {
    check_case("geom", "c1");
}

#[test]
fn geom_c1_len20() {
    check_case("geom", "c1_len20");
}

#[test]
fn geom_c2() {
    check_case("geom", "c2");
}

#[test]
fn geom_c3() {
    check_case("geom", "c3");
}

#[test]
fn geom_c4() {
    check_case("geom", "c4");
}

#[test]
fn resize_matches_pillow() {
    let dir = fixtures().join("resize");
    let meta = read_json(&dir.join("cases.json"));
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let ch = c["channels"].as_u64().unwrap() as usize;
        let get = |k: &str| c[k].as_u64().unwrap() as u32;
        let (w, h, ow, oh) = (
            get("width"),
            get("height"),
            get("out_width"),
            get("out_height"),
        );
        let src = std::fs::read(dir.join(format!("{name}.src"))).unwrap();
        let expect = std::fs::read(dir.join(format!("{name}.out"))).unwrap();
        let row = w as usize * ch;
        assert_eq!(src.len(), row * h as usize, "{name}");
        let got = resize_bicubic(&src, w, h, row, ch, ow, oh).unwrap();
        let diff = got
            .iter()
            .zip(&expect)
            .map(|(a, b)| (i16::from(*a) - i16::from(*b)).abs())
            .max()
            .unwrap_or(0);
        assert_eq!(got.len(), expect.len(), "{name}: length");
        assert!(
            got == expect,
            "{name}: differs from Pillow, max |err| {diff}"
        );

        // Same result through a padded stride, from inside a larger buffer.
        let stride = row + 5;
        let mut padded = vec![0xAAu8; 7 + stride * h as usize];
        for y in 0..h as usize {
            padded[7 + y * stride..7 + y * stride + row]
                .copy_from_slice(&src[y * row..(y + 1) * row]);
        }
        let got = resize_bicubic(&padded[7..], w, h, stride, ch, ow, oh).unwrap();
        assert!(got == expect, "{name}: differs with a padded stride");
    }
}

/// Times the two views of the 2048x1365 photo (run with --nocapture to see it).
#[test]
fn timing_c1_views() {
    let dir = fixtures().join("geom/cases");
    let image = load_rgb(dir.join("c1_image.png")).unwrap();
    let mask = load_mask(dir.join("c1_mask.png")).unwrap();
    let (mean, std) = mean_std("geom");
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let v = make_views(&image, &mask, 384, mean, std).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert!(!v.focal_is_full);
    }
    let reference = make_views(&image, &mask, 384, mean, std).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut best_mt = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let v = make_views_threads(&image, &mask, 384, mean, std, threads).unwrap();
        best_mt = best_mt.min(t.elapsed().as_secs_f64());
        assert_eq!(v, reference);
    }
    let mut one = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let out = resize_bicubic(&image.data, 2048, 1365, 2048 * 3, 3, 384, 384).unwrap();
        one = one.min(t.elapsed().as_secs_f64());
        assert_eq!(out.len(), 384 * 384 * 3);
    }
    println!(
        "make_views 2048x1365 -> 2 x [4,384,384]: {:.2} ms on 1 thread, {:.2} ms on {threads} \
         threads (best of 5); one RGB resize 2048x1365 -> 384x384: {:.2} ms",
        best * 1e3,
        best_mt * 1e3,
        one * 1e3
    );
}
