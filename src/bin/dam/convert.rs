//! `dam convert`: a Hugging Face DAM checkpoint into the two GGUF files, or
//! a `SamModel` or MobileSAM folder into a segmenter.

use std::path::PathBuf;

use clap::Args;
use dam::{Error, GgmlType, Result};

use crate::common::OutputArgs;

#[derive(Args)]
pub struct ConvertArgs {
    /// The checkpoint folder (config.json, llm/, vision_tower/, mm_projector/, context_provider/).
    hf_dir: PathBuf,
    #[command(flatten)]
    out: OutputArgs,
    /// File name stem (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Prefix of the single-image prompt ("Image: " for the joint image+video checkpoint).
    #[arg(long, default_value = "")]
    image_prefix: String,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let ty = GgmlType::parse(&a.out.ty)?;
    let name = match a.name {
        Some(n) => n,
        None => a
            .hf_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dam".into()),
    };
    std::fs::create_dir_all(&a.out.outdir).map_err(|e| Error::io(&a.out.outdir, e))?;
    if dam::convert::is_segmenter_checkpoint(&a.hf_dir) {
        let r = dam::convert::convert_segmenter(&a.hf_dir, &a.out.outdir, ty, &name, true)?;
        println!("{}", r.path.display());
        return Ok(());
    }
    let opts = dam::convert::ConvertOptions {
        image_prefix: a.image_prefix,
        progress: true,
    };
    let r = dam::convert::convert(&a.hf_dir, &a.out.outdir, ty, &name, &opts)?;
    println!("{}", r.llm_path.display());
    println!("{}", r.vision_path.display());
    Ok(())
}
