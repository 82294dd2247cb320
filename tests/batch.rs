//! Many regions of one image in one call (`Session::describe_many`), or of
//! different images (`Session::describe_batch`): every caption must equal
//! the one a separate `describe` call gives for its region, whatever the
//! batching (one wave, waves forced by the number of sequences or by the
//! context's cells), precision and sampling.

mod common;

use common::*;
use dam::GgmlType;
use dam::{Caption, DescribeOptions, Error, ImageView, Model, ModelParams, Region, Session};

/// Five regions of a fixture image: the case's mask, two boxes (one in
/// pixels, one normalized), a scribble and a box that covers the whole image
/// (its focal view is the full view, so the context provider is skipped).
fn regions<'a>(input: &'a Input) -> (ImageView<'a>, Vec<Region<'a>>) {
    let frame = input.frames().remove(0);
    let (w, h) = (input.images[0].width as f32, input.images[0].height as f32);
    let regions = vec![
        frame.region,
        Region::Box {
            x0: 0.1 * w,
            y0: 0.2 * h,
            x1: 0.55 * w,
            y1: 0.6 * h,
            normalized: false,
        },
        Region::Box {
            x0: 0.4,
            y0: 0.35,
            x1: 0.95,
            y1: 0.9,
            normalized: true,
        },
        Region::Scribble {
            points: vec![(0.2, 0.8), (0.5, 0.5), (0.8, 0.7)],
            width: 9.0,
            normalized: true,
        },
        Region::Box {
            x0: 0.0,
            y0: 0.0,
            x1: 1.0,
            y1: 1.0,
            normalized: true,
        },
    ];
    (frame.image, regions)
}

fn separate(
    s: &mut Session,
    image: &ImageView,
    regions: &[Region],
    o: &DescribeOptions,
) -> Vec<Caption> {
    regions
        .iter()
        .map(|r| s.describe(image, r, o).unwrap())
        .collect()
}

fn session(ty: GgmlType, params: ModelParams) -> Session {
    let (llm, vision) = converted("geom", ty);
    Model::load(
        &llm,
        &vision,
        ModelParams {
            threads: 2,
            ..params
        },
    )
    .unwrap()
    .session()
    .unwrap()
}

/// Checks that the batch's captions equal the separate ones (text, tokens,
/// frames) and that streaming delivered each region's text in order.
fn check_equal(
    tag: &str,
    s: &mut Session,
    image: &ImageView,
    regions: &[Region],
    o: &DescribeOptions,
) {
    let want = separate(s, image, regions, o);
    let mut streamed = vec![String::new(); regions.len()];
    let got = s
        .describe_many(image, regions, o, &mut |k, t| {
            streamed[k].push_str(t);
            true
        })
        .unwrap();
    assert_eq!(got.captions.len(), regions.len(), "{tag}");
    for (k, (g, w)) in got.captions.iter().zip(&want).enumerate() {
        assert!(!w.tokens.is_empty());
        assert_eq!(g.tokens, w.tokens, "{tag}: region {k} tokens");
        assert_eq!(g.text, w.text, "{tag}: region {k} text");
        assert_eq!(g.frames, w.frames, "{tag}: region {k} frames");
        assert_eq!(g.stopped_by_eos, w.stopped_by_eos, "{tag}: region {k}");
        assert_eq!(streamed[k], g.text, "{tag}: region {k} stream");
        assert_eq!(g.timings.n_prompt_tokens, w.timings.n_prompt_tokens);
    }
    let t = &got.timings;
    assert_eq!(
        t.n_generated,
        want.iter().map(|c| c.tokens.len()).sum::<usize>(),
        "{tag}"
    );
    assert!(t.vision_ms > 0.0 && t.prefill_ms > 0.0, "{tag}: {t:?}");
    println!(
        "{tag}: {} regions equal; prompt {} tokens; generated {:?}; eos {:?}",
        regions.len(),
        want[0].timings.n_prompt_tokens,
        got.captions
            .iter()
            .map(|c| c.tokens.len())
            .collect::<Vec<_>>(),
        got.captions
            .iter()
            .map(|c| c.stopped_by_eos)
            .collect::<Vec<_>>()
    );
}

fn greedy(n: usize) -> DescribeOptions {
    DescribeOptions {
        max_new_tokens: n,
        ..DescribeOptions::greedy()
    }
}

#[test]
fn batch_equals_separate_calls_reference_precision() {
    let input = Input::load("geom", "c1");
    let (image, rs) = regions(&input);
    let mut s = session(GgmlType::F32, ModelParams::reference());
    check_equal("f32/reference", &mut s, &image, &rs, &greedy(24));
    // The mask region alone gives the fixture's tokens, in a batch too.
    let case = Case::load("geom", "c1");
    let want: Vec<i32> = case.ids["output_ids"].iter().map(|&x| x as i32).collect();
    let q = case.json["query"].as_str().unwrap();
    let o = DescribeOptions {
        query: Some(q.rsplit_once('\n').unwrap().1.to_string()),
        ..greedy(24)
    };
    let got = s
        .describe_many(&image, &rs[..2], &o, &mut |_, _| true)
        .unwrap();
    assert_eq!(got.captions[0].tokens, want);
}

#[test]
fn batch_equals_separate_calls_defaults_and_sampling() {
    let input = Input::load("geom", "c3");
    let (image, rs) = regions(&input);
    let mut s = session(GgmlType::F16, ModelParams::default());
    check_equal("f16/default", &mut s, &image, &rs, &greedy(32));
    // Sampling: each region has its own sampler with the same seed. Sampling
    // follows any rounding difference, so this is checked with f32 weights,
    // whose batched and single-row kernels round alike on every CPU variant
    // (with reduced precision some ggml builds use different kernels for a
    // batch of rows; see `Session::describe_many`).
    let mut s = session(GgmlType::F32, ModelParams::reference());
    let o = DescribeOptions {
        max_new_tokens: 32,
        temperature: 0.8,
        top_p: 0.9,
        seed: 11,
        ..DescribeOptions::default()
    };
    check_equal("f32/sampled", &mut s, &image, &rs, &o);
}

#[test]
fn waves_give_the_same_captions() {
    let input = Input::load("geom", "c2");
    let (image, rs) = regions(&input);
    // Two sequences at a time: waves of 2, 2, 1.
    let mut s = session(
        GgmlType::F32,
        ModelParams {
            n_seq_max: 2,
            ..ModelParams::reference()
        },
    );
    check_equal("n_seq_max 2", &mut s, &image, &rs, &greedy(16));
    // A context too small for all five (242-position prompts; 60 tokens
    // need 301 cells each): cell-limited waves of 2, 2, 1.
    let mut s = session(
        GgmlType::F32,
        ModelParams {
            n_ctx: 768,
            n_seq_max: 8,
            ..ModelParams::reference()
        },
    );
    check_equal("n_ctx 768", &mut s, &image, &rs, &greedy(60));
    // A sequence that alone fills the context runs alone and stops when it
    // is full, as a single call does (242 + 14 = 256 positions).
    let mut s = session(
        GgmlType::F32,
        ModelParams {
            n_ctx: 256,
            n_seq_max: 8,
            ..ModelParams::reference()
        },
    );
    check_equal("n_ctx 256", &mut s, &image, &rs, &greedy(400));
    let c = s.describe(&image, &rs[0], &greedy(400)).unwrap();
    assert!(
        !c.stopped_by_eos && c.tokens.len() == 256 - 242 + 1,
        "{c:?}"
    );
}

#[test]
fn batch_errors_and_stops() {
    let input = Input::load("tiny", "c1");
    let (image, mut rs) = regions(&input);
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(&llm, &vision, ModelParams::default()).unwrap();
    let mut s = model.session().unwrap();
    let o = greedy(12);
    let err = s
        .describe_many(&image, &[], &o, &mut |_, _| true)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let many = vec![rs[1].clone(); dam::MAX_REGIONS + 1];
    let err = s
        .describe_many(&image, &many, &o, &mut |_, _| true)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // An empty region fails the whole call, naming it.
    rs.push(Region::Box {
        x0: 2.0,
        y0: 2.0,
        x1: 3.0,
        y1: 3.0,
        normalized: true,
    });
    let err = s
        .describe_many(&image, &rs, &o, &mut |_, _| true)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRegion(m) if m.starts_with("region 5:")),
        "{err}"
    );
    rs.pop();
    // Stopping one region's stream leaves the others complete.
    let full = s.describe_many(&image, &rs, &o, &mut |_, _| true).unwrap();
    let mut seen = vec![0usize; rs.len()];
    let part = s
        .describe_many(&image, &rs, &o, &mut |k, _| {
            seen[k] += 1;
            k != 1
        })
        .unwrap();
    assert_eq!(seen[1], 1);
    for k in [0, 2, 3, 4] {
        assert_eq!(part.captions[k].text, full.captions[k].text);
    }
    assert!(part.captions[1].tokens.len() <= full.captions[1].tokens.len());
    // A cancel before the call cancels it; the session stays usable.
    s.cancel_handle().cancel();
    let err = s
        .describe_many(&image, &rs, &o, &mut |_, _| true)
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    // A cancel from the stream stops the call within one step.
    let h = s.cancel_handle();
    let mut after = 0usize;
    let mut cancelled = false;
    let err = s
        .describe_many(&image, &rs, &o, &mut |_, _| {
            if cancelled {
                after += 1;
            }
            h.cancel();
            cancelled = true;
            true
        })
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(after < rs.len(), "{after} pieces after the cancel");
    let again = s.describe_many(&image, &rs, &o, &mut |_, _| true).unwrap();
    let texts = |c: &dam::Captions| {
        c.captions
            .iter()
            .map(|c| c.text.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&again), texts(&full));
}

/// A default session's KV cache is made at its first call, for that call's
/// cells (a multiple of 256), and grows when a call needs more (memory
/// follows use); the captions do not change with the size.
#[test]
fn context_grows_with_the_call() {
    let input = Input::load("geom", "c2");
    let (image, rs) = regions(&input);
    let mut s = session(GgmlType::F32, ModelParams::reference());
    assert_eq!(s.n_ctx(), 0, "no context before the first call");
    // 242-position prompts + 60 tokens: one caption needs 302 cells (512
    // made), four parallel sequences (n_seq_max 4) 1208 (the next power of
    // two, 2048).
    let o = DescribeOptions {
        ignore_eos: true,
        ..greedy(60)
    };
    separate(&mut s, &image, &rs[..1], &o);
    assert_eq!(s.n_ctx(), 512);
    // `prepare` makes the context a caption with these options needs.
    let mut p = session(GgmlType::F32, ModelParams::reference());
    p.prepare(&o).unwrap();
    assert_eq!(p.n_ctx(), 512);
    check_equal("grown", &mut s, &image, &rs, &o);
    assert_eq!(s.n_ctx(), 2048);
    let again = separate(&mut s, &image, &rs[..1], &o);
    assert_eq!(again[0].tokens.len(), 60);
}

/// llama.cpp maps the LLM file when it uses the weights in place and reads
/// it when the CPU repacks them (the mapped pages would stay resident
/// beside the copies): f32 is never repacked, and repacking off keeps every
/// file in place. (Which quantized types are repacked depends on the CPU:
/// `dam bench` reports `llm_mapped`.)
#[test]
fn llm_is_mapped_only_when_used_in_place() {
    let load = |ty: GgmlType, repack: bool| {
        let (llm, vision) = converted("geom", ty);
        let params = ModelParams {
            threads: 2,
            repack,
            ..ModelParams::default()
        };
        Model::load(&llm, &vision, params).unwrap()
    };
    assert!(load(GgmlType::F32, true).llm_mapped, "f32");
    assert!(load(GgmlType::Q8_0, false).llm_mapped, "no repacking");
}

/// Describes each frame alone with its options, then all of them in one
/// `batched` call, and checks that each caption (tokens, text, frames,
/// prompt, streamed text) is the lone one. Gives the lone captions.
fn check_batch_is_alone(
    s: &mut Session,
    frames: &[dam::Frame],
    opts: &[DescribeOptions],
    batched: impl FnOnce(
        &mut Session,
        &mut dyn FnMut(usize, &str) -> bool,
    ) -> dam::Result<dam::Captions>,
) -> Vec<Caption> {
    let want: Vec<Caption> = frames
        .iter()
        .zip(opts)
        .map(|(f, o)| s.describe(&f.image, &f.region, o).unwrap())
        .collect();
    let mut streamed = vec![String::new(); frames.len()];
    let got = batched(s, &mut |k, t| {
        streamed[k].push_str(t);
        true
    })
    .unwrap();
    assert_eq!(got.captions.len(), frames.len());
    for (k, (g, w)) in got.captions.iter().zip(&want).enumerate() {
        assert_eq!(g.tokens, w.tokens, "region {k} tokens");
        assert_eq!(g.text, w.text, "region {k} text");
        assert_eq!(g.frames, w.frames, "region {k} frames");
        assert_eq!(g.timings.n_prompt_tokens, w.timings.n_prompt_tokens, "{k}");
        assert_eq!(streamed[k], g.text, "region {k} stream");
    }
    want
}

/// Regions of DIFFERENT images in one `describe_batch` (what the server
/// batches from concurrent requests): each gets the caption it gets alone,
/// in waves too (five regions, four sequences by default).
#[test]
fn batch_of_different_images_equals_separate_calls() {
    let inputs: Vec<Input> = ["c2", "c3", "c4", "c5"]
        .iter()
        .map(|c| Input::load("tiny", c))
        .collect();
    let mut frames: Vec<dam::Frame> = inputs.iter().map(|i| i.frames().remove(0)).collect();
    frames.insert(
        3,
        dam::Frame {
            image: frames[0].image,
            region: Region::Box {
                x0: 0.1,
                y0: 0.2,
                x1: 0.6,
                y1: 0.8,
                normalized: true,
            },
        },
    );
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(&llm, &vision, ModelParams::reference()).unwrap();
    let mut s = model.session().unwrap();
    let o = greedy(24);
    let opts = vec![o.clone(); frames.len()];
    let want = check_batch_is_alone(&mut s, &frames, &opts, |s, f| {
        s.describe_batch(&frames, &o, f)
    });
    // Different images give different captions here, so a mix-up of
    // images between sequences would show.
    let distinct: std::collections::HashSet<_> = want.iter().map(|c| &c.tokens).collect();
    assert!(
        distinct.len() >= 3,
        "{:?}",
        want.iter().map(|c| &c.text).collect::<Vec<_>>()
    );
}

/// A q8_0 KV cache (half an f16 cache's memory; flash attention on): a
/// greedy caption starts with the f16 cache's tokens, in a batch as alone;
/// flash attention off with it is refused before llama.cpp sees it.
#[test]
fn q8_0_kv_cache() {
    use dam::llama::{FlashAttn, KvType};
    let input = Input::load("geom", "c1");
    let (image, rs) = regions(&input);
    let with = |kv_type| {
        session(
            GgmlType::F32,
            ModelParams {
                kv_type,
                ..ModelParams::default()
            },
        )
    };
    let o = greedy(24);
    let f16 = separate(&mut with(KvType::F16), &image, &rs[..2], &o);
    let mut s = with(KvType::Q8_0);
    let q8 = separate(&mut s, &image, &rs[..2], &o);
    for (a, b) in f16.iter().zip(&q8) {
        let agree = agreeing(&a.tokens, &b.tokens);
        println!("q8_0 vs f16: {agree}/{} tokens agree", a.tokens.len());
        // 12 and 15 of 24 on an AVX2 CPU; 8 leaves room for other kernels.
        assert!(agree >= 8, "{:?} vs {:?}", a.tokens, b.tokens);
    }
    let (llm, vision) = converted("geom", GgmlType::F32);
    let off = ModelParams {
        kv_type: KvType::Q8_0,
        flash_attn: FlashAttn::Off,
        ..ModelParams::default()
    };
    match Model::load(&llm, &vision, off) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("flash attention"), "{m}"),
        other => panic!("q8_0 with flash attention off: {:?}", other.err()),
    }
}

/// Regions in one `describe_batch_each`, each with its own options (token
/// limit, sampling and seed, question, length instruction: what concurrent
/// clients of the server send): each gets the caption it gets alone with
/// its options, in waves too; a wrong count of options is refused.
#[test]
fn batch_with_options_per_region_equals_separate_calls() {
    let inputs: Vec<Input> = ["c2", "c3", "c4", "c5", "c2"]
        .iter()
        .map(|c| Input::load("tiny", c))
        .collect();
    let frames: Vec<dam::Frame> = inputs.iter().map(|i| i.frames().remove(0)).collect();
    let sampled = |seed| DescribeOptions {
        max_new_tokens: 20,
        temperature: 0.8,
        top_p: 0.9,
        seed,
        ..DescribeOptions::default()
    };
    let opts = vec![
        greedy(24),
        greedy(5),
        sampled(11),
        DescribeOptions {
            query: Some("What is this?".into()),
            length: Some(dam::LengthControl::AboutWords(12)),
            ..greedy(16)
        },
        // The same image and region as the first, another seed and limit.
        sampled(12),
    ];
    let (llm, vision) = converted("tiny", GgmlType::F32);
    let model = Model::load(&llm, &vision, ModelParams::reference()).unwrap();
    let mut s = model.session().unwrap();
    let want = check_batch_is_alone(&mut s, &frames, &opts, |s, f| {
        s.describe_batch_each(&frames, &opts, f)
    });
    // The options did act: the limits, and the question's longer prompt.
    assert_eq!(want[1].tokens.len(), 5);
    assert!(want
        .iter()
        .zip(&opts)
        .all(|(c, o)| c.tokens.len() <= o.max_new_tokens));
    assert!(want[3].timings.n_prompt_tokens > want[0].timings.n_prompt_tokens);
    match s.describe_batch_each(&frames, &opts[..2], &mut |_, _| true) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("one per region"), "{m}"),
        other => panic!(
            "2 options for 5 regions: {:?}",
            other.map(|c| c.captions.len())
        ),
    }
    let mut bad = opts.clone();
    bad[2].top_p = 0.0;
    match s.describe_batch_each(&frames, &bad, &mut |_, _| true) {
        Err(Error::InvalidArgument(m)) => assert!(m.starts_with("region 2:"), "{m}"),
        other => panic!("bad top_p: {:?}", other.map(|c| c.captions.len())),
    }
}
