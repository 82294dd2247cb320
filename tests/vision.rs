//! Vision-stage parity with the reference fixtures: Z (full_features), F
//! (crop_features) and the projector output, for every case of both fixture
//! models, at f32 (reference-exact) and f16 / q8_0 (documented bounds).
//!
//! Metric: max |ours - ref| / max(1, max |ref|) over the tensor (the
//! fixtures' README metric).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use dam::llama::FlashAttn;
use dam::preprocess::{Views, Window};
use dam::vision::{VisionModel, VisionOptions, VisionOutput};
use dam::GgmlType;

/// Views straight from the fixture's 8-channel tensor (tests the graph alone).
fn fixture_views(case: &Case) -> Vec<Views> {
    let pix = case.per_frame("pixel_values");
    pix.iter()
        .enumerate()
        .map(|(k, p)| {
            let half = p.len() / 2;
            let fr = &case.json["frames"][k];
            let w = fr["focal_window_xyxy"].as_array().unwrap();
            let w: Vec<u32> = w.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            Views {
                full: p[..half].to_vec(),
                focal: p[half..].to_vec(),
                // The mask channel back in 0..=255 (SigLIP's mean = std = 0.5).
                full_mask: p[half * 3 / 4..half]
                    .iter()
                    .map(|&v| ((v * 0.5 + 0.5) * 255.0).round() as u8)
                    .collect(),
                window: Window {
                    x0: w[0],
                    y0: w[1],
                    x1: w[2],
                    y1: w[3],
                },
                focal_is_full: !fr["context_provider_applied"].as_bool().unwrap(),
            }
        })
        .collect()
}

/// Every `geom` case through `vm` (for comparing two loads of one file).
fn encode_geom_cases(vm: &VisionModel, detail: dam::vision::Detail) -> Vec<(String, VisionOutput)> {
    let mut be = vm.backend(2, Arc::new(AtomicBool::new(false))).unwrap();
    cases("geom")
        .into_iter()
        .map(|name| {
            let views = fixture_views(&Case::load("geom", &name));
            let refs: Vec<&Views> = views.iter().collect();
            let out = vm.encode(&mut be, &refs, detail).unwrap();
            (name, out)
        })
        .collect()
}

/// Worst (Z, F, projector) errors of one model over all its cases.
fn run_model(model: &str, ty: GgmlType) -> Vec<(String, f64, f64, f64)> {
    run_model_with(model, ty, FlashAttn::Auto)
}

/// [`run_model`] with an attention policy (the CPU's `Auto` and `On` run
/// ggml's fused kernel with f32 K/V, `Off` the separate ops).
fn run_model_with(
    model: &str,
    ty: GgmlType,
    flash_attn: FlashAttn,
) -> Vec<(String, f64, f64, f64)> {
    let (_, vpath) = converted(model, ty);
    let opts = VisionOptions {
        flash_attn,
        ..Default::default()
    };
    let vm = VisionModel::load_with(&vpath, &opts).unwrap();
    let mut be = vm.backend(2, Arc::new(AtomicBool::new(false))).unwrap();
    let mut rows = Vec::new();
    for name in cases(model) {
        let case = Case::load(model, &name);
        let views = fixture_views(&case);
        let refs: Vec<&Views> = views.iter().collect();
        let out = vm
            .encode(&mut be, &refs, dam::vision::Detail::Features)
            .unwrap();
        let (mut ez, mut ef, mut ep) = (0f64, 0f64, 0f64);
        let (zr, fr, pr) = (
            case.per_frame("full_features"),
            case.per_frame("crop_features"),
            case.per_frame("projector_output"),
        );
        for k in 0..case.frames() {
            let applied = case.json["frames"][k]["context_provider_applied"]
                .as_bool()
                .unwrap();
            assert_eq!(
                out.context_applied[k], applied,
                "{model}/{name} frame {k}: context provider"
            );
            ez = ez.max(rel_err(&out.full_features[k], zr[k]));
            ef = ef.max(rel_err(&out.crop_features[k], fr[k]));
            ep = ep.max(rel_err(&out.embeddings[k], pr[k]));
        }
        println!(
            "{model}/{name} {} (attention {flash_attn:?}): Z {ez:.2e}  F {ef:.2e}  proj {ep:.2e}",
            ty.name()
        );
        rows.push((name, ez, ef, ep));
    }
    rows
}

/// f32 is reference-exact with either attention path: the fused kernel
/// (the CPU default) and the separate ops. Measured worst: 9.8e-7 and
/// 8.7e-7.
#[test]
fn vision_parity_f32() {
    for flash in [FlashAttn::Auto, FlashAttn::Off] {
        for model in MODELS {
            for (name, ez, ef, ep) in run_model_with(model, GgmlType::F32, flash) {
                assert!(
                    ez <= 1e-4 && ef <= 1e-4 && ep <= 1e-4,
                    "{model}/{name} ({flash:?}): Z {ez:e} F {ef:e} proj {ep:e}"
                );
            }
        }
    }
}

/// Reduced-precision weights, same metric. Measured worst cases: f16 8.1e-4,
/// q8_0 2.4e-2 (the projector; geom's 144-wide matrix inputs are padded to
/// 160 and its 300-wide MLP to 320, so every matrix is q8_0). Bounds: 2e-3
/// and 4e-2.
#[test]
fn vision_parity_f16_q8_0() {
    for (ty, bound) in [(GgmlType::F16, 2e-3), (GgmlType::Q8_0, 4e-2)] {
        for model in MODELS {
            for (name, ez, ef, ep) in run_model(model, ty) {
                assert!(
                    ez <= bound && ef <= bound && ep <= bound,
                    "{model}/{name} {}: Z {ez:e} F {ef:e} proj {ep:e} > {bound:e}",
                    ty.name()
                );
            }
        }
    }
}

/// Weights copied into the CPU's extra buffer types at load (here ggml's
/// repacked q4_0 GEMM layout, which AVX2 CPUs have) give the results of the
/// mapped file layout, up to the kernels' rounding: the repacked GEMM
/// quantizes its activations its own way, and through three layers of a
/// random model that grows to ~1e-2, which must stay a small part of q4_0's
/// own error (against the f16 file).
#[test]
fn repacked_weights_match_the_file_layout() {
    let (_, v16) = converted("geom", GgmlType::F16);
    let vpath = v16.with_file_name("geom-vision-q4_0-repack-test.gguf");
    dam::convert::quantize(&v16, &vpath, GgmlType::Q4_0, 2).unwrap();
    let load = |repack| {
        VisionModel::load_with(
            &vpath,
            &VisionOptions {
                repack,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let (plain, repacked) = (load(false), load(true));
    assert_eq!(plain.n_repacked(), 0);
    let features = dam::ggml::cpu_features();
    println!(
        "cpu features {features:?}; repacked {}",
        repacked.n_repacked()
    );
    if features.iter().any(|f| f == "repack") && features.iter().any(|f| f == "avx2") {
        assert!(repacked.n_repacked() > 0, "no matrix was repacked");
    }
    let detail = dam::vision::Detail::Embeddings;
    let f16 = VisionModel::load_with(
        &v16,
        &VisionOptions {
            repack: false,
            ..Default::default()
        },
    )
    .unwrap();
    let runs = encode_geom_cases(&plain, detail)
        .into_iter()
        .zip(encode_geom_cases(&repacked, detail))
        .zip(encode_geom_cases(&f16, detail));
    for (((name, a), (_, b)), (_, r)) in runs {
        for k in 0..a.embeddings.len() {
            let e = rel_err(&b.embeddings[k], &a.embeddings[k]);
            let q = rel_err(&a.embeddings[k], &r.embeddings[k]);
            println!("geom/{name} q4_0 frame {k}: repacked vs file layout {e:.2e}; file layout vs f16 {q:.2e}");
            assert!(e <= 0.25 * q, "geom/{name}: {e:e} vs q4_0's own {q:e}");
        }
    }
}
