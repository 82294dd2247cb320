//! Segmenter parity at f32 against the fixtures of
//! `tests/fixtures/gen_segmenter.py` (transformers' SamProcessor + SamModel
//! with random weights): preprocessing bit-exact, image embeddings and
//! low-res mask logits within 1e-4 relative, IoU within 1e-4, the final
//! mask equal on >= 99.9% of pixels, the same best index. Sizes come from
//! the fixtures and the model file, never from constants here.

mod common;

use std::path::PathBuf;

use common::{fixtures, read_safetensors, rel_err};
use dam::segmenter::{Point, PointLabel, Prompt, Segmenter};
use dam::GgmlType;

const TOL: f64 = 1e-4;

fn root() -> PathBuf {
    fixtures().join("segmenter").join("sam-tiny")
}

/// The fixture checkpoint converted at f32, loaded.
fn load_f32() -> Segmenter {
    Segmenter::load(&common::converted_segmenter(GgmlType::F32), 2).unwrap()
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
    let mut seg = load_f32();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root().join("cases.json")).unwrap()).unwrap();
    let cases = root().join("cases");
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
    let mut seg = load_f32();
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

#[test]
fn second_prompt_runs_only_the_decoder() {
    let mut seg = load_f32();
    let a = dam::image::load_rgb(fixtures().join("geom/cases/c3_image.png")).unwrap();
    let (w, h) = (a.width as f32, a.height as f32);
    let click = Prompt {
        points: vec![Point {
            x: w / 3.0,
            y: h / 2.0,
            label: PointLabel::Foreground,
        }],
        bbox: None,
        multimask: true,
    };
    let boxed = Prompt {
        points: vec![],
        bbox: Some([1.0, 1.0, w / 2.0, h / 2.0]),
        multimask: false,
    };
    let first = seg.segment(&a.view().unwrap(), &click).unwrap();
    assert_eq!(seg.encodes(), 1);
    seg.segment(&a.view().unwrap(), &boxed).unwrap();
    assert_eq!(seg.encodes(), 1, "a second prompt re-encoded the image");
    // A failing prompt keeps the cache.
    let nothing = Prompt {
        bbox: None,
        ..boxed.clone()
    };
    assert!(seg.segment(&a.view().unwrap(), &nothing).is_err());
    assert_eq!(seg.segment(&a.view().unwrap(), &click).unwrap(), first);
    assert_eq!(seg.encodes(), 1);
    // Another image (same size, one pixel changed) is encoded.
    let mut b = a.clone();
    b.data[0] ^= 1;
    seg.segment(&b.view().unwrap(), &click).unwrap();
    assert_eq!(seg.encodes(), 2);
}

/// Points and segmented boxes through a model's segmenter: the region is the
/// segmenter's mask; without a segmenter they are refused with a message
/// that says what to load.
#[test]
fn model_resolves_points_through_its_segmenter() {
    use dam::{DescribeOptions, Model, ModelParams, Region};
    let (llm, vision) = common::converted("tiny", GgmlType::F32);
    let image = dam::image::load_rgb(fixtures().join("geom/cases/c3_image.png")).unwrap();
    let view = image.view().unwrap();
    let (w, h) = (image.width as f32, image.height as f32);
    let opts = DescribeOptions {
        max_new_tokens: 2,
        temperature: 0.0,
        ..Default::default()
    };
    let clicks = Region::Points(vec![(w / 3.0, h / 2.0, true), (w - 2.0, 2.0, false)]);
    let segbox = Region::SegmentedBox {
        x0: 1.0,
        y0: 1.0,
        x1: w / 2.0,
        y1: h / 2.0,
    };

    let plain = Model::load(&llm, &vision, ModelParams::default()).unwrap();
    assert!(plain.segmenter.is_none());
    let mut s = plain.session().unwrap();
    for r in [&clicks, &segbox] {
        match s.describe(&view, r, &opts) {
            Err(dam::Error::UnsupportedRegion(m)) => assert!(m.contains("segmenter"), "{m}"),
            other => panic!("{r:?} without a segmenter: {other:?}"),
        }
    }

    let params = ModelParams {
        threads: 2,
        segmenter: Some(common::converted_segmenter(GgmlType::F32)),
        ..Default::default()
    };
    let model = Model::load(&llm, &vision, params).unwrap();
    let mut own = load_f32();
    let mut s = model.session().unwrap();
    for r in [&clicks, &segbox] {
        let want = own
            .segment(&view, &dam::segmenter::regions::prompt_of(r).unwrap())
            .unwrap()
            .mask;
        assert_eq!(model.region_mask(r, &view).unwrap(), want);
        if let Some(b) = want.bbox() {
            let cap = s.describe(&view, r, &opts).unwrap();
            assert_eq!(cap.frames[0].mask_box, b);
            assert_eq!(cap.frames[0].mask_pixels, want.count());
        }
    }
    let seg = model.segmenter.as_ref().unwrap().lock().unwrap();
    assert_eq!(seg.encodes(), 1, "one image, one encoder run");
}
