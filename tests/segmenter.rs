//! Segmenter parity at f32 against the fixtures of
//! `tests/fixtures/gen_segmenter.py` (transformers' SamProcessor + SamModel
//! with random weights) and `tests/fixtures/gen_mobilesam.py` (MobileSAM's
//! official code and `SamPredictor`): preprocessing bit-exact, image embeddings and
//! low-res mask logits within 1e-4 relative, IoU within 1e-4, the final
//! mask equal on >= 99.9% of pixels, the same best index. Sizes come from
//! the fixtures and the model file, never from constants here.

mod common;

use std::path::PathBuf;

use common::{fixtures, read_safetensors, rel_err};
use dam::segmenter::{Point, PointLabel, Prompt, Segmenter};
use dam::GgmlType;

const TOL: f64 = 1e-4;

/// The fixture sets: SAM's and MobileSAM's.
const SAM: &str = "sam-tiny";
const MOBILESAM: &str = "mobilesam-tiny";

fn root(set: &str) -> PathBuf {
    fixtures().join("segmenter").join(set)
}

/// Converts the checkpoint of fixture `set` at f32 (into a folder of this
/// test's own, `tag`) and loads it.
fn load_f32(set: &str, tag: &str) -> Segmenter {
    let out = std::env::temp_dir().join(format!("dam-segmenter-{tag}-{}", std::process::id()));
    let r = dam::convert::convert_segmenter(
        &root(set).join("checkpoint"),
        &out,
        GgmlType::F32,
        set,
        false,
    )
    .unwrap();
    let s = Segmenter::load(&r.path, 2).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    s
}

fn prompt_of(p: &serde_json::Value) -> Prompt {
    let nums = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let points = match (p.get("points"), p.get("labels")) {
        (Some(pts), Some(labels)) => pts
            .as_array()
            .unwrap()
            .iter()
            .zip(labels.as_array().unwrap())
            .map(|(xy, l)| {
                let xy = nums(xy);
                Point {
                    x: xy[0],
                    y: xy[1],
                    label: if l.as_i64() == Some(1) {
                        PointLabel::Foreground
                    } else {
                        PointLabel::Background
                    },
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    let bbox = p.get("box").map(|b| {
        let b = nums(b);
        [b[0], b[1], b[2], b[3]]
    });
    Prompt {
        points,
        bbox,
        multimask: true,
    }
}

#[test]
fn parity_f32() {
    parity(SAM);
}

#[test]
fn mobilesam_parity_f32() {
    parity(MOBILESAM);
}

/// Every image and prompt of fixture `set` against our f32 pipeline.
fn parity(set: &str) {
    let mut seg = load_f32(set, &format!("parity-{set}"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root(set).join("cases.json")).unwrap()).unwrap();
    let cases = root(set).join("cases");
    let mut report = Vec::new();
    // Counted, not asserted at once, so a failure still prints every error.
    let mut failures = 0;
    for (name, entry) in index["images"].as_object().unwrap() {
        let image = dam::image::load_rgb(fixtures().join(entry["file"].as_str().unwrap())).unwrap();
        let (t, ids) = read_safetensors(&cases.join(format!("{name}.safetensors")));

        // Preprocessing: bit-exact pixels and the same sizes.
        let pre = seg.preprocess(&image.view().unwrap()).unwrap();
        let want = &t["pixel_values"];
        assert_eq!(want.shape, [3, pre.side as usize, pre.side as usize]);
        let diff = pre
            .pixels
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(diff, 0, "{name}: {diff} pixel values differ");
        assert_eq!(
            ids["original_size"],
            [i64::from(pre.original.0), i64::from(pre.original.1)]
        );
        assert_eq!(
            ids["reshaped_input_size"],
            [i64::from(pre.resized.0), i64::from(pre.resized.1)]
        );

        // Image encoder.
        let emb = seg.encode(&pre).unwrap();
        let e = rel_err(&seg.embedding_chw(&emb), &t["image_embeddings"].data);
        report.push(format!("{name}: image_embeddings rel err {e:.2e}"));
        assert!(e <= TOL, "{name}: image embeddings rel err {e}");

        for (pname, p) in entry["prompts"].as_object().unwrap() {
            let stem = format!("{name}_{pname}");
            let (t, ids) = read_safetensors(&cases.join(format!("{stem}.safetensors")));
            let prompt = prompt_of(p);
            let low = &t["low_res_masks"];
            let iou_ref = &t["iou_scores"].data;

            // Prompt encoder + mask decoder on our own embedding.
            let (masks, iou) = seg.decode(&emb, &pre, &prompt).unwrap();
            assert_eq!(masks.len(), low.shape[0], "{stem}: mask count");
            let got: Vec<f32> = masks.concat();
            let e_low = rel_err(&got, &low.data);
            let e_iou = common::max_abs_err(&iou, iou_ref);
            report.push(format!(
                "{stem}: low-res rel err {e_low:.2e}, iou err {e_iou:.2e}"
            ));
            failures += usize::from(e_low > TOL || e_iou > TOL);

            // End to end through `segment` (cached embedding) and
            // post-processing.
            let s = seg.segment(&image.view().unwrap(), &prompt).unwrap();
            failures += usize::from(s.best as i64 != ids["best_index"][0]);
            assert_eq!(s.low_res_side as usize, low.shape[1]);
            let want = dam::image::load_mask(cases.join(format!("{stem}_mask.png"))).unwrap();
            assert_eq!((s.mask.width, s.mask.height), (want.width, want.height));
            let same = s
                .mask
                .data
                .iter()
                .zip(&want.data)
                .filter(|(a, b)| a == b)
                .count();
            let frac = same as f64 / want.data.len() as f64;
            failures += usize::from(frac < 0.999);
            report.push(format!(
                "{stem}: mask agreement {frac:.5}, best {} (reference {})",
                s.best, ids["best_index"][0]
            ));
        }
    }
    for r in &report {
        eprintln!("{r}");
    }
    assert_eq!(failures, 0, "{}", report.join("\n"));
}

#[test]
fn bad_prompts_are_errors() {
    let mut seg = load_f32(SAM, "bad");
    let image = dam::image::load_rgb(fixtures().join("geom/cases/c3_image.png")).unwrap();
    let view = image.view().unwrap();
    let click = |x: f32, y: f32| Prompt {
        points: vec![Point {
            x,
            y,
            label: PointLabel::Foreground,
        }],
        bbox: None,
        multimask: true,
    };
    let (w, h) = (image.width as f32, image.height as f32);
    for bad in [
        click(-1.0, 5.0),
        click(w + 1.0, 5.0),
        click(f32::NAN, 5.0),
        click(5.0, f32::INFINITY),
        Prompt {
            points: vec![],
            bbox: None,
            multimask: true,
        },
        Prompt {
            points: vec![],
            bbox: Some([10.0, 10.0, 10.0, 20.0]),
            multimask: true,
        },
        Prompt {
            points: vec![],
            bbox: Some([0.0, 0.0, w, h + 5.0]),
            multimask: true,
        },
    ] {
        assert!(seg.segment(&view, &bad).is_err(), "{bad:?} accepted");
    }
    let ok = seg.segment(&view, &click(w / 2.0, h / 2.0)).unwrap();
    assert_eq!(ok.iou.len(), 3);
    let single = Prompt {
        multimask: false,
        ..click(w / 2.0, h / 2.0)
    };
    assert_eq!(seg.segment(&view, &single).unwrap().iou.len(), 1);
}
