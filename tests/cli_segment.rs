//! `dam segment` and `dam describe --points --segmenter`, the real binary
//! on the sam-tiny fixture converted by `dam convert`: the dump's fixed
//! names hold the numbers tests/segmenter.rs checks (same tolerances).

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::cli::{dam, ok};
use common::{fixtures, max_abs_err, read_safetensors, rel_err};
use serde_json::Value;

const TOL: f64 = 1e-4;

fn args(v: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    v.iter().map(|a| a.as_ref().to_os_string()).collect()
}

fn tmp() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("dam-cli-seg-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        p
    })
}

fn root() -> PathBuf {
    fixtures().join("segmenter/sam-tiny")
}

/// sam-tiny converted at f32 by `dam convert` (once): the printed path.
fn segmenter() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = ok(&args(&[
            &"convert",
            &root().join("checkpoint"),
            &"--outdir",
            &tmp().join("seg"),
            &"--type",
            &"f32",
            &"--name",
            &"sam-tiny",
        ]));
        let p = PathBuf::from(out.trim());
        assert!(
            p.ends_with("sam-tiny-segmenter-f32.gguf") && p.is_file(),
            "{out}"
        );
        p
    })
}

/// `--points x,y;... --labels l,...` and `--box` of a fixture prompt.
fn prompt_flags(p: &Value) -> Vec<String> {
    let nums = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().to_string())
            .collect()
    };
    let mut out = Vec::new();
    if let (Some(pts), Some(l)) = (p.get("points"), p.get("labels")) {
        let xy: Vec<String> = pts
            .as_array()
            .unwrap()
            .iter()
            .map(|q| nums(q).join(","))
            .collect();
        out.extend([
            "--points".into(),
            xy.join(";"),
            "--labels".into(),
            nums(l).join(","),
        ]);
    }
    if let Some(b) = p.get("box") {
        out.extend(["--box".into(), nums(b).join(",")]);
    }
    out
}

#[test]
fn segment_dump_matches_fixtures() {
    let index: Value =
        serde_json::from_slice(&std::fs::read(root().join("cases.json")).unwrap()).unwrap();
    let cases = root().join("cases");
    let mut report = Vec::new();
    let mut failures = 0;
    for (name, entry) in index["images"].as_object().unwrap() {
        let (img, _) = read_safetensors(&cases.join(format!("{name}.safetensors")));
        let image = fixtures().join(entry["file"].as_str().unwrap());
        for (pname, p) in entry["prompts"].as_object().unwrap() {
            let stem = format!("{name}_{pname}");
            let dump = tmp().join(format!("{stem}.safetensors"));
            let png = tmp().join(format!("{stem}.png"));
            let mut a = args(&[
                &"segment",
                &"--segmenter",
                segmenter(),
                &"-i",
                &image,
                &"-t",
                &"2",
            ]);
            a.extend(prompt_flags(p).into_iter().map(OsString::from));
            a.extend(args(&[
                &"--dump",
                &dump,
                &"--out",
                &png,
                &"--overlay",
                &tmp().join("o.png"),
            ]));
            let json: Value = serde_json::from_str(ok(&a).trim()).unwrap();
            let (got, mask) = read_safetensors(&dump);
            let (want, ids) = read_safetensors(&cases.join(format!("{stem}.safetensors")));
            let emb = &got["image_embeddings"];
            assert_eq!(emb.shape, img["image_embeddings"].shape, "{stem}");
            let e_emb = rel_err(&emb.data, &img["image_embeddings"].data);
            assert_eq!(
                got["low_res_masks"].shape, want["low_res_masks"].shape,
                "{stem}"
            );
            let e_low = rel_err(&got["low_res_masks"].data, &want["low_res_masks"].data);
            let e_iou = max_abs_err(&got["iou_scores"].data, &want["iou_scores"].data);
            let printed: Vec<f32> = json["iou_scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                printed, got["iou_scores"].data,
                "{stem}: printed iou_scores"
            );
            let best_ok = json["best_index"].as_i64() == Some(ids["best_index"][0]);
            let ref_mask = dam::image::load_mask(cases.join(format!("{stem}_mask.png"))).unwrap();
            let png_mask = dam::image::load_mask(&png).unwrap();
            assert_eq!(
                png_mask.data.len(),
                mask["mask"].len(),
                "{stem}: --out vs --dump"
            );
            let same = mask["mask"]
                .iter()
                .zip(&ref_mask.data)
                .filter(|(a, b)| **a == i64::from(**b))
                .count();
            let frac = same as f64 / ref_mask.data.len() as f64;
            report.push(format!(
                "{stem}: emb {e_emb:.2e}, low-res {e_low:.2e}, iou {e_iou:.2e}, mask {frac:.5}, best ok {best_ok}"
            ));
            failures +=
                usize::from(e_emb > TOL || e_low > TOL || e_iou > TOL || frac < 0.999 || !best_ok);
        }
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(failures, 0, "{}", report.join("\n"));
}

#[test]
fn describe_points_through_the_segmenter() {
    let (llm, vision) = common::converted("tiny", dam::GgmlType::F32);
    let image = fixtures().join("geom/cases/c3_image.png");
    let base = |more: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a = args(&[
            &"describe",
            &"--llm",
            &llm,
            &"--vision",
            &vision,
            &"-i",
            &image,
            &"--greedy",
            &"-n",
            &"2",
            &"--json",
            &"-t",
            &"2",
        ]);
        a.extend(args(more));
        a
    };
    let clicks: [&dyn AsRef<std::ffi::OsStr>; 4] =
        [&"--points", &"88,66;32,36", &"--labels", &"1,0"];

    // Without a segmenter: refused, naming what to load.
    let o = dam(&base(&clicks));
    assert!(!o.ok() && o.stderr.contains("segmenter"), "{}", o.stderr);
    // Labels of the wrong count or value.
    for labels in ["1", "1,0,1", "1,2"] {
        let o = dam(&base(&[
            &"--points",
            &"88,66;32,36",
            &"--labels",
            &labels,
            &"--segmenter",
            segmenter(),
        ]));
        assert!(
            !o.ok() && o.stderr.contains("--labels"),
            "{labels}: {}",
            o.stderr
        );
    }

    // With one: the region is the segmenter's mask, the overlay is written.
    let overlay = tmp().join("describe-overlay.png");
    let mut a = base(&clicks);
    a.extend(args(&[&"--segmenter", segmenter(), &"--overlay", &overlay]));
    let cap: Value = serde_json::from_str(ok(&a).trim()).unwrap();
    let seg: Value = serde_json::from_str(
        ok(&args(&[
            &"segment",
            &"--segmenter",
            segmenter(),
            &"-i",
            &image,
            &"--points",
            &"88,66;32,36",
            &"--labels",
            &"1,0",
        ]))
        .trim(),
    )
    .unwrap();
    assert_eq!(cap["frames"][0]["mask_pixels"], seg["mask_pixels"]);
    assert_eq!(cap["frames"][0]["mask_box_xyxy"], seg["mask_box_xyxy"]);
    assert!(dam::image::load_rgb(&overlay).is_ok());

    // The opt-in box via the segmenter.
    let mut a = base(&[&"--box", &"60.8,42,137.6,86.4", &"--segment-box"]);
    a.extend(args(&[&"--segmenter", segmenter()]));
    let cap: Value = serde_json::from_str(ok(&a).trim()).unwrap();
    assert!(cap["frames"][0]["mask_pixels"].as_u64().unwrap() > 0);
}
