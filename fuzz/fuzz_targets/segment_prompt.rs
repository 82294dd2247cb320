#![no_main]
//! cargo fuzz target; the body is shared with the corpus replay test
//! (tests/fuzz_corpus.rs), see fuzz/targets.rs.

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::segment_prompt(data));
