//! `dam quantize`: re-quantize an LLM or vision GGUF file.

use std::path::PathBuf;

use clap::Args;
use dam::{GgmlType, Result};

use crate::common::cli_threads;

#[derive(Args)]
pub struct QuantizeArgs {
    input: PathBuf,
    output: PathBuf,
    /// q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q2_k, q3_k, f16, bf16, f32.
    #[arg(value_name = "TYPE")]
    ty: String,
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let ty = GgmlType::parse(&a.ty)?;
    let threads = cli_threads(a.threads)?;
    dam::convert::quantize(&a.input, &a.output, ty, threads)?;
    println!("{}", a.output.display());
    Ok(())
}
