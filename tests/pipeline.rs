//! End-to-end parity: PNG image + mask -> regions -> views -> vision graph
//! -> prompt -> llama.cpp -> greedy tokens, for every fixture case of both
//! models, through the public `Session` API.

mod common;

use common::*;
use dam::vision::Detail;
use dam::GgmlType;
use dam::{DescribeOptions, Frame, LengthControl, Model, ModelParams};

/// The plain query of a case (its user text after the `<image>` line).
fn plain_query(case: &Case) -> String {
    let q = case.json["query"].as_str().unwrap();
    q.rsplit_once('\n').unwrap().1.to_string()
}

/// The fixtures' request for a case: greedy, 24 tokens, the case's query;
/// the length-controlled case goes through the `LengthControl` option.
fn case_options(case: &Case) -> DescribeOptions {
    let mut opts = DescribeOptions {
        max_new_tokens: 24,
        ..DescribeOptions::greedy()
    };
    if case.name.contains("len20") {
        opts.length = Some(LengthControl::AboutWords(20));
    } else if case.frames() == 1 {
        opts.query = Some(plain_query(case));
    }
    opts
}

/// Describes one fixture case the way the reference ran it.
fn run_case(
    session: &mut dam::Session,
    model_name: &str,
    name: &str,
    detail: Detail,
) -> (Case, dam::Caption, dam::model::Trace) {
    let case = Case::load(model_name, name);
    let inputs = Input::of(&case);
    let (cap, trace) = session
        .trace(&inputs.frames(), &case_options(&case), detail)
        .unwrap();
    (case, cap, trace)
}

/// Top-1 minus top-2 of a logits row.
fn margin(row: &[f32]) -> f32 {
    let mut r = row.to_vec();
    r.sort_by(|a, b| b.total_cmp(a));
    r[0] - r[1]
}

#[test]
fn pipeline_parity_f32() {
    let base = ModelParams {
        threads: 2,
        ..ModelParams::reference()
    };
    let mut failures = Vec::new();
    for (device, params) in on_devices(base) {
        for model_name in MODELS {
            failures.extend(parity_f32(model_name, device, params.clone()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs every case of `model_name` and returns what differs from the
/// reference (all cases run, so that one report shows every difference).
fn parity_f32(model_name: &str, device: &str, params: ModelParams) -> Vec<String> {
    let mut failures = Vec::new();
    let (llm, vision) = converted(model_name, GgmlType::F32);
    let model = Model::load(&llm, &vision, params).unwrap();
    let mut session = model.session().unwrap();
    for name in cases(model_name) {
        let (case, cap, trace) = run_case(&mut session, model_name, &name, Detail::Features);
        let tag = format!("{device} {model_name}/{name}");
        assert_eq!(
            trace.prompt,
            case.json["prompt"].as_str().unwrap(),
            "{tag}: prompt"
        );
        assert_eq!(
            &trace.prompt_ids, &case.ids["prompt_ids"],
            "{tag}: prompt ids"
        );
        for (k, f) in cap.frames.iter().enumerate() {
            let want: Vec<u32> = case.json["frames"][k]["focal_window_xyxy"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(f.window.to_array().to_vec(), want, "{tag}: window {k}");
        }
        let pr = case.per_frame("projector_output");
        let ep = (0..case.frames())
            .map(|k| rel_err(&trace.vision.embeddings[k], pr[k]))
            .fold(0.0, f64::max);
        let el = max_abs_err(&trace.generation.first_logits, &case.t("first_logits").data);
        let want_ids: Vec<i32> = case.ids["output_ids"].iter().map(|&x| x as i32).collect();
        let agree = agreeing(&cap.tokens, &want_ids);
        println!(
            "{tag}: proj {ep:.2e}  first_logits {el:.2e}  tokens {}",
            cap.tokens == want_ids
        );
        if ep > 1e-4 {
            failures.push(format!("{tag}: projector rel err {ep:e}"));
        }
        if el > 1e-3 {
            failures.push(format!("{tag}: first logits max abs err {el:e}"));
        }
        if cap.tokens != want_ids {
            // The reference's top-1/top-2 margin where the tokens part: a
            // near tie points at arithmetic precision, a wide one at a bug.
            let step = &case.t("step_logits");
            let v = step.shape[1];
            let margin = step.data.chunks(v).nth(agree).map_or(f32::NAN, margin);
            failures.push(format!(
                "{tag}: greedy tokens differ from step {agree} of {} (reference margin there {margin:.4})",
                want_ids.len()
            ));
        } else if cap.text != case.json["generation"]["text"].as_str().unwrap() {
            failures.push(format!("{tag}: text {:?}", cap.text));
        }
    }
    failures
}

#[test]
fn streaming_and_cancel() {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(
        &llm,
        &vision,
        ModelParams {
            threads: 2,
            ..ModelParams::reference()
        },
    )
    .unwrap();
    let mut session = model.session().unwrap();
    let case = Case::load("tiny", "c1");
    let inputs = Input::of(&case);
    let fr = inputs.frames();
    let opts = DescribeOptions {
        max_new_tokens: 24,
        ..DescribeOptions::greedy()
    };
    let mut pieces = Vec::new();
    let cap = session
        .describe_stream(&fr[0].image, &fr[0].region, &opts, &mut |t| {
            pieces.push(t.to_string());
            true
        })
        .unwrap();
    assert_eq!(pieces.concat().trim(), cap.text);

    // Stop after the second piece.
    let mut n = 0;
    let short = session
        .describe_stream(&fr[0].image, &fr[0].region, &opts, &mut |_| {
            n += 1;
            n < 2
        })
        .unwrap();
    assert!(short.tokens.len() < cap.tokens.len(), "callback stop");

    // A cancel before the call cancels it; the session stays usable.
    session.cancel_handle().cancel();
    let e = session
        .describe(&fr[0].image, &fr[0].region, &opts)
        .unwrap_err();
    assert_eq!(e, dam::Error::Cancelled);
    let again = session
        .describe(&fr[0].image, &fr[0].region, &opts)
        .unwrap();
    assert_eq!(again.tokens, cap.tokens);

    // Cancel from another thread while decoding: at most one more token.
    let handle = session.cancel_handle();
    let long = DescribeOptions {
        max_new_tokens: 200,
        ..DescribeOptions::greedy()
    };
    let mut count = 0usize;
    let mut after = None;
    let r = session.describe_stream(&fr[0].image, &fr[0].region, &long, &mut |_| {
        count += 1;
        if count == 3 {
            let h = handle.clone();
            std::thread::spawn(move || h.cancel()).join().unwrap();
            after = Some(count);
        }
        true
    });
    match r {
        Err(dam::Error::Cancelled) => assert!(count <= 4, "{count} pieces after cancel at 3"),
        Ok(c) => assert!(c.stopped_by_eos, "finished without cancel: {c:?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn video_drops_empty_frames() {
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(
        &llm,
        &vision,
        ModelParams {
            threads: 2,
            ..ModelParams::reference()
        },
    )
    .unwrap();
    let mut session = model.session().unwrap();
    let case = Case::load("tiny", "v1");
    let mut inputs = Input::of(&case);
    inputs.masks[2].data.iter_mut().for_each(|v| *v = 0);
    let fr = inputs.frames();
    let opts = DescribeOptions {
        max_new_tokens: 4,
        ..DescribeOptions::greedy()
    };
    let cap = session.describe_video(&fr, &opts, &mut |_| true).unwrap();
    assert_eq!(cap.dropped_frames, vec![2]);
    assert_eq!(cap.frames.len(), 7);
    for m in inputs.masks.iter_mut() {
        m.data.iter_mut().for_each(|v| *v = 0);
    }
    let fr = inputs.frames();
    let e = session
        .describe_video(&fr, &opts, &mut |_| true)
        .unwrap_err();
    assert!(
        matches!(e, dam::Error::InvalidRegion(ref m) if m.contains("every frame")),
        "{e}"
    );
    // Too many frames.
    let nine: Vec<Frame> = fr.iter().chain(fr.iter().take(1)).cloned().collect();
    assert!(matches!(
        session.describe_video(&nine, &opts, &mut |_| true),
        Err(dam::Error::InvalidArgument(_))
    ));
}

/// Reduced-precision weights (engine defaults: f16 KV cache): per case, how
/// many greedy tokens agree with the reference and the first-logit error.
/// Random weights have small top-1/top-2 margins, so later flips are
/// expected; the first token must agree wherever its reference margin is
/// clear (> 0.05).
#[test]
fn pipeline_agreement_f16_q8_0() {
    let base = ModelParams {
        threads: 2,
        ..ModelParams::default()
    };
    for (device, params) in on_devices(base) {
        agreement(device, params);
    }
}

fn agreement(device: &str, params: ModelParams) {
    for ty in [GgmlType::F16, GgmlType::Q8_0] {
        for model_name in MODELS {
            let (llm, vision) = converted(model_name, ty);
            let model = Model::load(&llm, &vision, params.clone()).unwrap();
            let mut session = model.session().unwrap();
            for name in cases(model_name) {
                let (case, cap, trace) =
                    run_case(&mut session, model_name, &name, Detail::Embeddings);
                let want: Vec<i32> = case.ids["output_ids"].iter().map(|&x| x as i32).collect();
                let agree = agreeing(&cap.tokens, &want);
                let first = &case.t("first_logits").data;
                let el = max_abs_err(&trace.generation.first_logits, first);
                let margin = margin(first);
                println!(
                    "{device} {} {model_name}/{name}: {agree}/{} tokens agree, first_logits max abs err {el:.2e}, ref margin {margin:.3}",
                    ty.name(),
                    want.len()
                );
                if margin > 0.05 {
                    assert!(
                        agree >= 1,
                        "{model_name}/{name} {}: first token differs",
                        ty.name()
                    );
                }
            }
        }
    }
}
