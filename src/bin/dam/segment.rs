//! `dam segment`: a mask from clicks and/or a box with a segmenter alone
//! (no DAM model), as PNG, overlay or a safetensors dump whose names are a
//! fixed interface (outside checks read them).

use std::path::PathBuf;

use clap::Args;
use dam::image::load_rgb;
use dam::segmenter::regions::clicks_prompt;
use dam::segmenter::{Prompt, Segmenter};
use dam::{Error, Result};

use crate::common::cli_threads;
use crate::dump::Tensors;
use crate::inputs::clicks_and_box;

#[derive(Args)]
pub struct SegmentArgs {
    /// The dam-segmenter GGUF file.
    #[arg(long, value_name = "S.gguf")]
    segmenter: PathBuf,
    /// Input image (png/jpeg).
    #[arg(long, short = 'i')]
    image: PathBuf,
    /// Clicks x,y;x,y in pixels.
    #[arg(long, value_name = "X,Y;...", allow_hyphen_values = true)]
    points: Option<String>,
    /// One label per click: 1 = positive (the default), 0 = negative.
    #[arg(long, value_name = "L,L,...", requires = "points")]
    labels: Option<String>,
    /// A box x0,y0,x1,y1 in pixels (with or without clicks).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", allow_hyphen_values = true)]
    bbox: Option<String>,
    /// One mask instead of three candidates (SAM's single-mask output).
    #[arg(long)]
    single_mask: bool,
    /// Write the selected mask as a PNG (255 = inside).
    #[arg(long, value_name = "MASK.png")]
    out: Option<PathBuf>,
    /// Write the image with the mask tinted and the clicks drawn.
    #[arg(long, value_name = "OUT.png")]
    overlay: Option<PathBuf>,
    /// Write image_embeddings [C,h,w], low_res_masks [N,s,s], iou_scores [N]
    /// (f32) and mask [H,W] (u8 0/1) to a safetensors file.
    #[arg(long, value_name = "OUT.safetensors")]
    dump: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long, short = 't', default_value_t = 0)]
    threads: usize,
}

pub fn run(a: SegmentArgs) -> Result<()> {
    let threads = cli_threads(a.threads)?;
    let (clicks, bbox) =
        clicks_and_box(a.points.as_deref(), a.labels.as_deref(), a.bbox.as_deref())?;
    if clicks.is_empty() && bbox.is_none() {
        return Err(Error::InvalidArgument(
            "give --points, --box or both".into(),
        ));
    }
    let prompt = Prompt {
        multimask: !a.single_mask,
        ..clicks_prompt(&clicks, bbox)
    };
    let image = load_rgb(&a.image)?;
    let mut seg = Segmenter::load(&a.segmenter, threads)?;
    let t = std::time::Instant::now();
    let s = seg.segment(&image.view()?, &prompt)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let (w, h) = (s.mask.width, s.mask.height);
    if let Some(out) = &a.out {
        let px: Vec<u8> = s.mask.data.iter().map(|&m| m * 255).collect();
        save(out, &px, w, h, image::ExtendedColorType::L8)?;
    }
    if let Some(out) = &a.overlay {
        let mut img =
            dam::overlay::draw(&image, &s.mask, s.mask.bbox().unwrap_or_default(), [0; 4])?;
        dam::overlay::draw_clicks(&mut img, &clicks);
        save(out, &img.data, w, h, image::ExtendedColorType::Rgb8)?;
    }
    if let Some(out) = &a.dump {
        let emb = seg
            .cached_embedding()
            .ok_or_else(|| Error::Backend("no image embedding".into()))?;
        let (c, g) = (seg.hp.out as usize, seg.hp.grid() as usize);
        let side = s.low_res_side as usize;
        let mut ts = Tensors::default();
        ts.f32("image_embeddings", vec![c, g, g], &seg.embedding_chw(emb));
        ts.f32(
            "low_res_masks",
            vec![s.low_res.len(), side, side],
            &s.low_res.concat(),
        );
        ts.f32("iou_scores", vec![s.iou.len()], &s.iou);
        ts.u8("mask", vec![h as usize, w as usize], &s.mask.data);
        ts.write(out)?;
    }
    let json = serde_json::json!({
        "best_index": s.best,
        "iou_scores": s.iou,
        "mask_pixels": s.mask.count(),
        "mask_box_xyxy": s.mask.bbox().map(|b| [b.0, b.1, b.2, b.3]),
        "segment_ms": ms,
    });
    println!("{json}");
    Ok(())
}

fn save(
    path: &std::path::Path,
    data: &[u8],
    w: u32,
    h: u32,
    ty: image::ExtendedColorType,
) -> Result<()> {
    image::save_buffer(path, data, w, h, ty)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}
