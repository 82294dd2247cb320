//! The `dam` command line, end to end: the real binary run with
//! `std::process::Command` on models converted from the fixture checkpoints
//! by `dam convert` itself (once per test binary).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::cli::{dam, ok, Out};
use common::{fixtures, max_abs_err, rel_err, Case};
use serde_json::Value;

/// Builds an argument vector from anything path- or string-like.
macro_rules! args {
    ($($x:expr),* $(,)?) => { Vec::<OsString>::from([$(OsString::from(&$x)),*]) };
}

/// The temporary folder of this test binary.
fn tmp() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("dam-cli-tests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    })
}

/// A converted fixture model: its folder and what `dam convert` printed.
struct Converted {
    dir: PathBuf,
    stdout: String,
}

fn convert(model: &str) -> Converted {
    let dir = tmp().join(format!("{model}-f32"));
    let ck = fixtures().join(model).join("checkpoint");
    let stdout = ok(&args![
        "convert", ck, "--outdir", dir, "--type", "f32", "--name", model
    ]);
    Converted { dir, stdout }
}

/// `tiny` converted to f32 with the CLI (once).
fn tiny() -> &'static Converted {
    static M: OnceLock<Converted> = OnceLock::new();
    M.get_or_init(|| convert("tiny"))
}

/// `geom` converted to f32 with the CLI (once).
fn geom() -> &'static Converted {
    static M: OnceLock<Converted> = OnceLock::new();
    M.get_or_init(|| convert("geom"))
}

fn case_dir(model: &str) -> PathBuf {
    fixtures().join(model).join("cases")
}

fn image(model: &str, case: &str) -> PathBuf {
    case_dir(model).join(format!("{case}_image.png"))
}

fn mask(model: &str, case: &str) -> PathBuf {
    case_dir(model).join(format!("{case}_mask.png"))
}

fn fixture_json(model: &str, case: &str) -> Value {
    serde_json::from_slice(&std::fs::read(case_dir(model).join(format!("{case}.json"))).unwrap())
        .unwrap()
}

/// `describe -m tiny -i <case image>` (no region yet).
fn describe_image(case: &str) -> Vec<OsString> {
    args!["describe", "-m", tiny().dir, "-i", image("tiny", case)]
}

/// `describe -m tiny -i <case image> --mask <case mask>`.
fn describe_mask(case: &str) -> Vec<OsString> {
    let mut a = describe_image(case);
    a.extend(args!["--mask", mask("tiny", case)]);
    a
}

/// `-i f0 --mask m0 ... -i f7 --mask m7` of the tiny 8-frame video.
fn video_frames() -> Vec<OsString> {
    let mut a = Vec::new();
    for k in 0..8 {
        a.extend(args![
            "-i",
            case_dir("tiny").join(format!("v1_image_f{k}.png")),
            "--mask",
            case_dir("tiny").join(format!("v1_mask_f{k}.png"))
        ]);
    }
    a
}

fn with(mut a: Vec<OsString>, more: Vec<OsString>) -> Vec<OsString> {
    a.extend(more);
    a
}

/// The JSON object `--json` / `dump` printed: exactly one value on stdout.
fn one_json(stdout: &str) -> Value {
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {stdout}"));
    assert!(v.is_object(), "not a JSON object: {stdout}");
    assert_eq!(stdout.trim().lines().count(), 1, "one line: {stdout}");
    v
}

fn windows(v: &Value) -> Vec<Value> {
    v["frames"]
        .as_array()
        .expect("frames[]")
        .iter()
        .map(|f| f["focal_window_xyxy"].clone())
        .collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an id array: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Reference-parity settings of the LLM.
fn exact() -> Vec<OsString> {
    args!["--kv-type", "f32", "--flash-attn", "off"]
}

// ------------------------------------------------------------------ convert, quantize

#[test]
fn convert_prints_both_paths() {
    let m = tiny();
    let lines: Vec<&str> = m.stdout.lines().collect();
    let want = [
        m.dir.join("tiny-llm-f32.gguf"),
        m.dir.join("tiny-vision-f32.gguf"),
    ];
    assert_eq!(lines.len(), 2, "stdout: {}", m.stdout);
    for (line, want) in lines.iter().zip(&want) {
        assert_eq!(Path::new(line), want.as_path(), "stdout: {}", m.stdout);
        let len = std::fs::metadata(want).unwrap().len();
        assert!(len > 1000, "{}: {len} bytes", want.display());
    }
}

#[test]
fn quantized_models_describe() {
    let m = tiny();
    for ty in ["q8_0", "q4_k"] {
        let dir = tmp().join(format!("tiny-{ty}"));
        std::fs::create_dir_all(&dir).unwrap();
        for half in ["llm", "vision"] {
            let src = m.dir.join(format!("tiny-{half}-f32.gguf"));
            let dst = dir.join(format!("tiny-{half}-{ty}.gguf"));
            let out = ok(&args!["quantize", src, dst, ty]);
            assert_eq!(out.trim(), dst.display().to_string(), "{ty} {half}");
            let (a, b) = (
                std::fs::metadata(&src).unwrap().len(),
                std::fs::metadata(&dst).unwrap().len(),
            );
            assert!(b > 0 && b < a, "{ty} {half}: {b} bytes, f32 {a}");
        }
        let out = ok(&args![
            "describe",
            "-m",
            dir,
            "-i",
            image("tiny", "c4"),
            "--mask",
            mask("tiny", "c4"),
            "--greedy",
            "--max-tokens",
            "8"
        ]);
        assert!(!out.trim().is_empty(), "{ty}: empty caption");
    }
}

// ------------------------------------------------------------------ describe

/// An RGBA PNG of a fixture image whose alpha channel is its mask.
fn rgba_with_mask_alpha(case: &str) -> PathBuf {
    let p = tmp().join(format!("{case}_rgba.png"));
    let rgb = image::open(image("tiny", case)).unwrap().to_rgb8();
    let m = image::open(mask("tiny", case)).unwrap().to_luma8();
    assert_eq!(rgb.dimensions(), m.dimensions());
    let rgba = image::RgbaImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        image::Rgba([r, g, b, m.get_pixel(x, y).0[0]])
    });
    rgba.save(&p).unwrap();
    p
}

#[test]
fn describe_every_region_kind() {
    let short = args!["--greedy", "--max-tokens", "8"];
    let rgba = rgba_with_mask_alpha("c4");
    let runs: Vec<(&str, Vec<OsString>)> = vec![
        ("mask", describe_mask("c4")),
        (
            "box",
            with(describe_image("c4"), args!["--box", "190,20,290,160"]),
        ),
        (
            "box partly outside",
            with(describe_image("c4"), args!["--box", "-20,-10,250,100"]),
        ),
        (
            "box --normalized",
            with(
                describe_image("c4"),
                args!["--box", "0.6,0.1,0.95,0.9", "--normalized"],
            ),
        ),
        (
            "scribble",
            with(
                describe_image("c4"),
                args!["--scribble", "200,30;240,80;280,150", "--brush", "12"],
            ),
        ),
        (
            "alpha-mask",
            args!["describe", "-m", tiny().dir, "-i", rgba, "--alpha-mask"],
        ),
    ];
    let mut captions = BTreeMap::new();
    for (what, a) in runs {
        let out = ok(&with(a, short.clone()));
        assert!(!out.trim().is_empty(), "{what}: empty caption");
        captions.insert(what, out);
    }
    // The alpha channel is the same mask on the same pixels.
    assert_eq!(captions["alpha-mask"], captions["mask"], "alpha vs mask");
}

#[test]
fn greedy_is_deterministic() {
    let a = with(describe_mask("c1"), args!["--greedy", "--max-tokens", "24"]);
    let first = ok(&a);
    assert!(!first.trim().is_empty());
    assert_eq!(ok(&a), first);
}

/// A q8_0 KV cache (flash attention auto means on with it) gives a caption,
/// with --kv-type and with --low-memory (no repack too).
#[test]
fn kv_type_q8_0() {
    let run = |more: Vec<OsString>| {
        let a = args![
            "describe",
            "-m",
            geom().dir,
            "-i",
            image("geom", "c1"),
            "--mask",
            mask("geom", "c1"),
            "--greedy",
            "--max-tokens",
            "8",
            "--json"
        ];
        one_json(&ok(&with(a, more)))
    };
    let q8 = run(args!["--kv-type", "q8_0"]);
    assert!(!ids(&q8["tokens"]).is_empty(), "{q8}");
    let low = run(args!["--low-memory"]);
    assert!(!ids(&low["tokens"]).is_empty(), "{low}");
}

#[test]
fn json_output() {
    for case in ["c1", "c2", "c4"] {
        let out = ok(&with(
            describe_mask(case),
            args!["--json", "--greedy", "--max-tokens", "4"],
        ));
        let v = one_json(&out);
        assert!(v["caption"].is_string(), "{case}: caption: {v}");
        let tokens = v["tokens"].as_array().expect("tokens[]");
        assert!(!tokens.is_empty() && tokens.len() <= 4, "{case}: {v}");
        assert!(tokens.iter().all(|t| t.is_i64()), "{case}: {v}");
        let want = fixture_json("tiny", case);
        assert_eq!(windows(&v), windows(&want), "{case}: focal window");
        let t = v["timings_ms"].as_object().expect("timings_ms{}");
        for k in ["load", "preprocess", "vision", "prefill", "decode"] {
            assert!(
                t.get(k).and_then(Value::as_f64).is_some_and(|x| x >= 0.0),
                "{case}: timings_ms.{k}: {v}"
            );
        }
    }
}

#[test]
fn json_greedy_matches_fixture() {
    for case in ["c1", "c1_len20"] {
        let want = fixture_json("tiny", case);
        let mut a = with(
            describe_mask("c1"),
            args!["--greedy", "--max-tokens", "24", "--json"],
        );
        a.extend(exact());
        if case == "c1_len20" {
            a.extend(args!["--length", "about:20"]);
        }
        let v = one_json(&ok(&a));
        assert_eq!(
            ids(&v["tokens"]),
            ids(&want["generation"]["output_ids"]),
            "{case}: tokens"
        );
        assert_eq!(v["caption"], want["generation"]["text"], "{case}: caption");
        assert_eq!(
            v["stopped_by_eos"], want["generation"]["stopped_by_eos"],
            "{case}"
        );
    }
}

#[test]
fn length_control() {
    let out = ok(&with(
        describe_mask("c4"),
        args!["--length", "about:20", "--greedy", "--max-tokens", "8"],
    ));
    assert!(!out.trim().is_empty());
}

#[test]
fn overlay_png() {
    let png = tmp().join("overlay_c4.png");
    ok(&with(
        describe_mask("c4"),
        args!["--greedy", "--max-tokens", "2", "--overlay", png],
    ));
    let out = image::open(&png).unwrap().to_rgb8();
    let inp = image::open(image("tiny", "c4")).unwrap().to_rgb8();
    let m = image::open(mask("tiny", "c4")).unwrap().to_luma8();
    assert_eq!(out.dimensions(), inp.dimensions());
    let (mut inside, mut changed_in, mut outside, mut changed_out) = (0, 0, 0, 0);
    for (x, y, p) in out.enumerate_pixels() {
        let changed = p != inp.get_pixel(x, y);
        if m.get_pixel(x, y).0[0] > 0 {
            inside += 1;
            changed_in += changed as usize;
        } else {
            outside += 1;
            changed_out += changed as usize;
        }
    }
    assert!(inside > 0);
    assert!(
        changed_in * 100 >= inside * 99,
        "{changed_in} of {inside} mask pixels changed"
    );
    // Outside the mask only the box and window lines are drawn.
    assert!(
        changed_out * 10 <= outside,
        "{changed_out} of {outside} pixels outside the mask changed"
    );
}

#[test]
fn video_caption() {
    let mut a = args!["describe", "-m", tiny().dir];
    a.extend(video_frames());
    a.extend(args!["--greedy", "--max-tokens", "24", "--json"]);
    a.extend(exact());
    let v = one_json(&ok(&a));
    let want = fixture_json("tiny", "v1");
    assert_eq!(windows(&v), windows(&want), "focal windows");
    assert_eq!(v["dropped_frames"], serde_json::json!([]));
    assert_eq!(
        ids(&v["tokens"]),
        ids(&want["generation"]["output_ids"]),
        "tokens"
    );
    assert_eq!(v["caption"], want["generation"]["text"]);
    assert!(!v["caption"].as_str().unwrap().trim().is_empty());
}

#[test]
fn stream_equals_plain_output() {
    for case in ["c1", "c2"] {
        let base = with(describe_mask(case), args!["--greedy", "--max-tokens", "24"]);
        let plain = ok(&with(base.clone(), args!["--no-stream"]));
        let stream = ok(&with(base, args!["--stream"]));
        assert!(!plain.trim().is_empty(), "{case}");
        assert_eq!(stream, plain, "{case}");
    }
}

// ------------------------------------------------------------------ dump

/// The tensors of a safetensors file: name -> (dtype, shape, raw bytes).
type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn read_safetensors(p: &Path) -> Tensors {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The vision layers that run, "U of L layers" in `dam info`.
fn used_layers(conv: &Converted) -> usize {
    let out = ok(&args!["info", "-m", conv.dir]);
    let before = out
        .split(" of ")
        .next()
        .unwrap_or_else(|| panic!("dam info: {out}"));
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("dam info: no 'U of L layers': {out}"))
}

/// Fixture tensors `dam dump` does not write: the LLM's hidden states (the
/// engine exposes only logits from llama.cpp), and the states of the vision
/// layers after `hidden_states[-2]`, which the engine does not run (they do
/// not affect the output).
fn not_dumped(name: &str, used_layers: usize) -> bool {
    if name == "llm_final_hidden" || name.starts_with("debug.llm.") {
        return true;
    }
    let layer = name
        .strip_prefix("debug.full.")
        .or_else(|| name.strip_prefix("debug.crop."))
        .and_then(|r| {
            r.strip_prefix("layer_")
                .or_else(|| r.strip_prefix("xattn_"))
        })
        .and_then(|i| i.parse::<usize>().ok());
    layer.is_some_and(|i| i >= used_layers)
}

fn check_dump(conv: &Converted, model: &str, case: &str, debug: bool) {
    let tag = format!("{model}/{case}{}", if debug { " --debug" } else { "" });
    let c = Case::load(model, case);
    let out = tmp().join(format!(
        "dump-{model}-{case}{}.safetensors",
        if debug { "-debug" } else { "" }
    ));
    let mut a = args!["dump", "--model", conv.dir, "--out", out];
    for (i, m) in c.inputs() {
        a.extend(args!["--image", i, "--mask", m]);
    }
    if debug {
        a.extend(args!["--debug"]);
    }
    let summary = one_json(&ok(&a));
    let used = used_layers(conv);
    let got = read_safetensors(&out);
    let want = read_safetensors(&c.dir().join(format!("{case}.safetensors")));

    // Names, shapes and dtypes.
    let expected: BTreeSet<&String> = want
        .keys()
        .filter(|k| (debug || !k.starts_with("debug.")) && !not_dumped(k, used))
        .collect();
    let names: BTreeSet<&String> = got.keys().collect();
    assert_eq!(names, expected, "{tag}: tensor names");
    for k in &expected {
        let (g, w) = (&got[*k], &want[*k]);
        assert_eq!((&g.0, &g.1), (&w.0, &w.1), "{tag}: {k} dtype/shape");
    }

    // Values.
    assert!(
        got["pixel_values"].2 == want["pixel_values"].2,
        "{tag}: pixel_values differ"
    );
    let mut features = vec![
        "full_features",
        "crop_features",
        "projector_output",
        "llm_inputs_embeds",
    ];
    features.extend(expected.iter().filter_map(|k| {
        (k.starts_with("debug.full.") || k.starts_with("debug.crop.")).then_some(k.as_str())
    }));
    for k in features {
        let e = rel_err(&f32s(&got[k].2), &f32s(&want[k].2));
        println!("{tag}: {k} rel err {e:.2e}");
        assert!(e <= 1e-4, "{tag}: {k} rel err {e:e}");
    }
    let e = max_abs_err(
        &f32s(&got["first_logits"].2),
        &f32s(&want["first_logits"].2),
    );
    println!("{tag}: first_logits max abs err {e:.2e}");
    assert!(e <= 1e-3, "{tag}: first_logits max abs err {e:e}");
    let e = max_abs_err(&f32s(&got["step_logits"].2), &f32s(&want["step_logits"].2));
    println!("{tag}: step_logits max abs err {e:.2e}");
    assert!(e <= 1e-3, "{tag}: step_logits max abs err {e:e}");
    for k in ["prompt_ids", "output_ids"] {
        assert_eq!(i64s(&got[k].2), i64s(&want[k].2), "{tag}: {k}");
    }

    // The JSON summary.
    let j = &c.json;
    let frames = summary["frames"].as_array().expect("frames[]");
    assert_eq!(frames.len(), c.frames(), "{tag}: frames");
    for (k, f) in frames.iter().enumerate() {
        for key in ["focal_window_xyxy", "context_provider_applied"] {
            assert_eq!(f[key], j["frames"][k][key], "{tag}: frames[{k}].{key}");
        }
    }
    assert_eq!(summary["prompt"], j["prompt"], "{tag}: prompt");
    assert_eq!(
        ids(&summary["prompt_ids"]),
        ids(&j["prompt_ids"]),
        "{tag}: prompt_ids"
    );
    assert_eq!(
        ids(&summary["output_ids"]),
        ids(&j["generation"]["output_ids"]),
        "{tag}: output_ids"
    );
    assert_eq!(summary["text"], j["generation"]["text"], "{tag}: text");
}

#[test]
fn dump_tiny_c1() {
    check_dump(tiny(), "tiny", "c1", false);
}

#[test]
fn dump_tiny_c1_debug() {
    check_dump(tiny(), "tiny", "c1", true);
}

#[test]
fn dump_tiny_video() {
    check_dump(tiny(), "tiny", "v1", false);
}

#[test]
fn dump_geom_c4() {
    check_dump(geom(), "geom", "c4", false);
}

// ------------------------------------------------------------------ errors

/// A failure must be a non-zero exit with either one `dam: ...` line or
/// clap's usage error (exit code 2), never a panic. Returns stderr.
fn check_error(o: &Out) -> Result<String, String> {
    let e = &o.stderr;
    let what = format!("dam {} (exit {:?}):\n{e}", o.cmd, o.code);
    if o.ok() || o.code.is_none() {
        return Err(format!("expected a failure: {what}"));
    }
    if e.contains("panicked") || e.contains("backtrace") {
        return Err(format!("panic: {what}"));
    }
    if !o.stdout.trim().is_empty() {
        return Err(format!("stdout not empty: {what}\nstdout: {}", o.stdout));
    }
    let clap = o.code == Some(2) && e.starts_with("error: ");
    let ours = o.code == Some(1) && e.starts_with("dam: ") && e.trim_end().lines().count() == 1;
    if !(clap || ours) {
        return Err(format!("not one clear `dam:` line: {what}"));
    }
    Ok(e.clone())
}

/// Runs every case and reports all problems at once.
fn expect_errors(cases: Vec<(&str, Vec<OsString>, &[&str])>) {
    let mut problems = Vec::new();
    for (label, a, needles) in cases {
        let o = dam(&a);
        match check_error(&o) {
            Err(p) => problems.push(format!("[{label}] {p}")),
            Ok(e) => {
                let low = e.to_lowercase();
                if !needles.iter().any(|n| low.contains(&n.to_lowercase())) {
                    problems.push(format!(
                        "[{label}] message should mention one of {needles:?}: {e}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
}

/// A gray PNG of a given size and value.
fn gray_png(name: &str, w: u32, h: u32, v: u8) -> PathBuf {
    let p = tmp().join(name);
    image::GrayImage::from_pixel(w, h, image::Luma([v]))
        .save(&p)
        .unwrap();
    p
}

#[test]
fn region_errors() {
    let rgb_c4 = image("tiny", "c4");
    let zero = gray_png("zero_300x180.png", 300, 180, 0);
    // Nine frames: the eight of v1 and frame 0 again.
    let mut nine = args!["describe", "-m", tiny().dir, "--greedy"];
    nine.extend(video_frames());
    nine.extend(args![
        "-i",
        case_dir("tiny").join("v1_image_f0.png"),
        "--mask",
        case_dir("tiny").join("v1_mask_f0.png")
    ]);
    expect_errors(vec![
        ("missing region", describe_image("c4"), &["region"]),
        (
            "two regions",
            with(describe_mask("c4"), args!["--box", "1,2,30,40"]),
            &["exactly one region"],
        ),
        (
            "mask count",
            with(describe_mask("c4"), args!["-i", rgb_c4]),
            &["mask"],
        ),
        (
            "no such image",
            args![
                "describe",
                "-m",
                tiny().dir,
                "-i",
                tmp().join("nope.png"),
                "--mask",
                mask("tiny", "c4")
            ],
            &["nope.png"],
        ),
        (
            "mask size",
            with(describe_image("c4"), args!["--mask", mask("tiny", "c2")]),
            &["97x61", "size"],
        ),
        (
            "empty mask",
            with(describe_image("c4"), args!["--mask", zero]),
            &["empty"],
        ),
        (
            "box outside",
            with(describe_image("c4"), args!["--box", "400,300,500,400"]),
            &["empty", "outside"],
        ),
        (
            "inverted box",
            with(describe_image("c4"), args!["--box", "100,100,50,50"]),
            &["inverted"],
        ),
        (
            "box of 3",
            with(describe_image("c4"), args!["--box", "1,2,3"]),
            &["--box"],
        ),
        (
            "scribble of 1",
            with(describe_image("c4"), args!["--scribble", "10"]),
            &["--scribble"],
        ),
        (
            "points",
            with(describe_image("c4"), args!["--points", "10,10"]),
            &["unsupported region kind"],
        ),
        (
            "alpha on rgb",
            with(describe_image("c4"), args!["--alpha-mask"]),
            &["alpha"],
        ),
        ("nine frames", nine, &["at most 8"]),
    ]);
}

#[test]
fn option_errors() {
    let m = || describe_mask("c4");
    expect_errors(vec![
        (
            "length kind",
            with(m(), args!["--length", "bad:3"]),
            &["--length"],
        ),
        (
            "length 0",
            with(m(), args!["--length", "about:0"]),
            &["--length"],
        ),
        (
            "temperature -1",
            with(m(), args!["--temperature", "-1"]),
            &["temperature"],
        ),
        (
            "temperature=-1",
            with(m(), args!["--temperature=-1"]),
            &["temperature"],
        ),
        (
            "top-p 0",
            with(m(), args!["--top-p", "0"]),
            &["top_p", "top-p"],
        ),
        (
            "max-tokens 0",
            with(m(), args!["--max-tokens", "0"]),
            &["max"],
        ),
        (
            "kv-type q4",
            with(m(), args!["--kv-type", "q4"]),
            &["--kv-type"],
        ),
        (
            "threads 100000",
            with(m(), args!["--threads", "100000"]),
            &["--threads"],
        ),
        (
            "kv-type q8_0 with 16-wide heads",
            with(m(), args!["--kv-type", "q8_0"]),
            &["multiple of 32"],
        ),
        (
            "low-memory and kv-type",
            with(m(), args!["--low-memory", "--kv-type", "f16"]),
            &["--kv-type"],
        ),
        (
            "kv-type q8_0 without flash attention",
            with(m(), args!["--kv-type", "q8_0", "--flash-attn", "off"]),
            &["flash attention"],
        ),
    ]);
}

#[test]
fn dump_errors() {
    let dump = |out: PathBuf| {
        args![
            "dump",
            "-m",
            tiny().dir,
            "-i",
            image("tiny", "c4"),
            "--mask",
            mask("tiny", "c4"),
            "--out",
            out
        ]
    };
    expect_errors(vec![
        (
            "dump into a missing folder",
            dump(tmp().join("no-such-dir").join("x.safetensors")),
            &["no such file"],
        ),
        (
            "dump mask count",
            with(
                dump(tmp().join("never.safetensors")),
                args!["-i", image("tiny", "c4")],
            ),
            &["mask"],
        ),
        (
            "dump mask size",
            with(
                args![
                    "dump",
                    "-m",
                    tiny().dir,
                    "--out",
                    tmp().join("never.safetensors")
                ],
                args!["-i", image("tiny", "c4"), "--mask", mask("tiny", "c2")],
            ),
            &["97x61"],
        ),
    ]);
}

#[cfg(unix)]
#[test]
fn non_utf8_query() {
    use std::os::unix::ffi::OsStringExt;
    let mut a = describe_mask("c4");
    a.push("--query".into());
    a.push(OsString::from_vec(vec![b'a', 0xff, 0xfe, b'b']));
    let o = dam(&a);
    let e = check_error(&o).unwrap_or_else(|p| panic!("{p}"));
    assert!(e.to_lowercase().contains("utf-8"), "{e}");
}

#[test]
fn model_errors() {
    let conv = tiny();
    let llm = conv.dir.join("tiny-llm-f32.gguf");
    let vision = conv.dir.join("tiny-vision-f32.gguf");
    let empty = tmp().join("empty-model");
    std::fs::create_dir_all(&empty).unwrap();
    let truncated = tmp().join("truncated-vision-f32.gguf");
    let bytes = std::fs::read(&vision).unwrap();
    std::fs::write(&truncated, &bytes[..1000]).unwrap();
    // Deterministic pseudo-random bytes (xorshift).
    let random = tmp().join("random-vision-f32.gguf");
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..100_000)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    std::fs::write(&random, noise).unwrap();
    let region = || args!["-i", image("tiny", "c4"), "--mask", mask("tiny", "c4")];
    let with_files = |l: &Path, v: &Path| {
        with(
            args!["describe", "--llm", l, "--vision", v, "--greedy"],
            region(),
        )
    };
    expect_errors(vec![
        (
            "no such model dir",
            with(
                args!["describe", "-m", tmp().join("no-such-model")],
                region(),
            ),
            &["no-such-model"],
        ),
        (
            "empty model dir",
            with(args!["describe", "-m", empty], region()),
            &["empty-model"],
        ),
        (
            "--llm is the vision file",
            with_files(&vision, &vision),
            &["vision file"],
        ),
        (
            "--vision is the llm file",
            with_files(&llm, &llm),
            &["llm file"],
        ),
        (
            "truncated vision",
            with_files(&llm, &truncated),
            &["truncated"],
        ),
        ("random vision", with_files(&llm, &random), &["not a gguf"]),
    ]);
}

#[test]
fn convert_and_quantize_errors() {
    let conv = tiny();
    expect_errors(vec![
        (
            "convert without config.json",
            args![
                "convert",
                case_dir("tiny"),
                "--outdir",
                tmp().join("bad-convert")
            ],
            &["config.json"],
        ),
        (
            "quantize unknown type",
            args![
                "quantize",
                conv.dir.join("tiny-llm-f32.gguf"),
                tmp().join("bad-quant.gguf"),
                "q9_z"
            ],
            &["unknown type", "q9_z"],
        ),
    ]);
}

#[test]
fn error_check_detects_panics() {
    // The checker itself: a panic message or exit 101 is never accepted.
    let o = Out {
        code: Some(101),
        stdout: String::new(),
        stderr: "thread 'main' panicked at src/bin/dam.rs:1:1:\nboom\n".into(),
        cmd: "x".into(),
    };
    assert!(check_error(&o).is_err());
    let o = Out {
        code: Some(1),
        stdout: String::new(),
        stderr: "dam: a\ndam: b\n".into(),
        cmd: "x".into(),
    };
    assert!(check_error(&o).is_err(), "two lines");
}
