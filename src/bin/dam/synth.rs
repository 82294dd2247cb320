//! `dam synth`: a model of DAM-3B's (or tiny) shapes with seeded random
//! weights, for benchmarks and tests.

use clap::Args;
use dam::{GgmlType, Result};

use crate::common::OutputArgs;

#[derive(Args)]
pub struct SynthArgs {
    /// dam-3b (DAM-3B's exact shapes, 7 GB at f16) or tiny (for tests).
    #[arg(long, default_value = "dam-3b")]
    preset: String,
    #[command(flatten)]
    out: OutputArgs,
    /// File name stem (default: synth-{preset}).
    #[arg(long)]
    name: Option<String>,
    /// Seed of the random weights (the files depend only on it).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
    /// Write the headers only (sparse files of the full size, no weights).
    #[arg(long)]
    header_only: bool,
}

pub fn run(a: SynthArgs) -> Result<()> {
    let preset = dam::convert::Preset::parse(&a.preset)?;
    let ty = GgmlType::parse(&a.out.ty)?;
    let name = a.name.unwrap_or_else(|| format!("synth-{}", preset.name()));
    let opts = dam::convert::SynthOptions {
        seed: a.seed,
        threads: a.threads,
        progress: true,
        header_only: a.header_only,
    };
    let r = dam::convert::synth(preset, &a.out.outdir, ty, &name, &opts)?;
    for f in &r.fallbacks {
        eprintln!("dam: note: {f}");
    }
    println!("{}", r.llm_path.display());
    println!("{}", r.vision_path.display());
    Ok(())
}
