//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! fuzz targets' bodies (`fuzz/targets.rs`) on stable Rust, so every test
//! run checks that no input the fuzzers kept (seeds, new coverage, former
//! crashes) panics or aborts. The fuzzers themselves run with cargo-fuzz
//! (fuzz/README.md).

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn replay(target: &str, f: fn(&[u8])) {
    let files = corpus(target);
    for (p, bytes) in &files {
        let r = std::panic::catch_unwind(|| f(bytes));
        assert!(r.is_ok(), "{target}: {} panicked", p.display());
    }
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn gguf_load_corpus() {
    replay("gguf_load", targets::gguf_load);
}

#[test]
fn preprocess_corpus() {
    replay("preprocess", targets::preprocess);
}

#[test]
fn capi_describe_corpus() {
    replay("capi_describe", targets::capi_describe);
}

#[test]
fn segmenter_load_corpus() {
    replay("segmenter_load", targets::segmenter_load);
}

#[test]
fn segment_prompt_corpus() {
    replay("segment_prompt", targets::segment_prompt);
}
