//! `dam`: describe regions of images and videos, convert and quantize
//! checkpoints, dump every stage for parity checks.
//!
//! One file per subcommand, each with its clap arguments and a `run`; the
//! flags several share live in `common` (model) and `inputs` (image and
//! region). A new subcommand is one file, its `mod` line, one variant of
//! [`Cmd`] (its doc comment is the help line) and one arm in `main`.

mod bench;
mod common;
mod convert;
mod describe;
mod dump;
mod info;
mod inputs;
mod quantize;
mod segment;
#[cfg(feature = "server")]
mod serve;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dam",
    version,
    about = "Describe Anything: detailed captions of image and video regions"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Describe a masked region of an image, or of up to 8 video frames.
    Describe(describe::DescribeArgs),
    /// Convert a Hugging Face DAM checkpoint folder into the two GGUF files.
    Convert(convert::ConvertArgs),
    /// Re-quantize an LLM or vision GGUF file.
    Quantize(quantize::QuantizeArgs),
    /// Run one request and write every stage (parity/debugging).
    Dump(dump::DumpArgs),
    /// A mask from clicks and/or a box with a segmenter (no DAM model).
    Segment(segment::SegmentArgs),
    /// Print a model's hyper-parameters and the compute backend.
    Info(common::ModelArgs),
    /// Write a model with DAM-3B's (or a tiny) shapes and seeded random weights.
    Synth(synth::SynthArgs),
    /// Time each stage of greedy requests (JSON on stdout).
    Bench(bench::BenchArgs),
    /// Serve captions over HTTP: an OpenAI-compatible chat-completions API.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Describe(a) => describe::run(a),
        Cmd::Convert(a) => convert::run(a),
        Cmd::Quantize(a) => quantize::run(a),
        Cmd::Dump(a) => dump::run(a),
        Cmd::Segment(a) => segment::run(a),
        Cmd::Info(a) => info::run(a),
        Cmd::Synth(a) => synth::run(a),
        Cmd::Bench(a) => bench::run(a),
        #[cfg(feature = "server")]
        Cmd::Serve(a) => serve::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dam: {e}");
            ExitCode::FAILURE
        }
    }
}
