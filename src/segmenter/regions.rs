//! Regions that a segmenter turns into masks (clicks, a box given to the
//! segmenter): one place for the engine (`Model`), the C ABI and the CLI.

use std::sync::Mutex;

use super::{Point, PointLabel, Prompt, Segmenter};
use crate::error::{Error, Result};
use crate::image::{ImageView, Mask};
use crate::region::{rasterize_any, Region};

/// What a caller is told when a region needs a segmenter and none is loaded.
pub const NEEDS_SEGMENTER: &str = "points and segmented boxes need a segmenter: load a dam-segmenter GGUF (`dam convert` of a SAM checkpoint) with ModelParams::segmenter, dam_device_params.segmenter_path or --segmenter";

/// The segmenter prompt of `region`, `None` for a region rasterised
/// without one. Multimask output, the highest predicted IoU kept: what the
/// reference's `dam_with_sam` does.
pub fn prompt_of(region: &Region) -> Option<Prompt> {
    match region {
        Region::Points(clicks) => Some(clicks_prompt(clicks, None)),
        Region::SegmentedBox { x0, y0, x1, y1 } => {
            Some(clicks_prompt(&[], Some([*x0, *y0, *x1, *y1])))
        }
        _ => None,
    }
}

/// The multimask prompt of clicks `(x, y, positive)` and an optional box.
pub fn clicks_prompt(clicks: &[(f32, f32, bool)], bbox: Option<[f32; 4]>) -> Prompt {
    Prompt {
        points: clicks
            .iter()
            .map(|&(x, y, positive)| Point {
                x,
                y,
                label: if positive {
                    PointLabel::Foreground
                } else {
                    PointLabel::Background
                },
            })
            .collect(),
        bbox,
        multimask: true,
    }
}

/// The mask of `region` on `image`: rasterised, or segmented by
/// `segmenter` (an `UnsupportedRegion` error naming what to load when
/// there is none). An empty mask is a result, as in [`rasterize_any`].
pub fn region_mask(
    segmenter: Option<&Mutex<Segmenter>>,
    region: &Region,
    image: &ImageView,
) -> Result<Mask> {
    let Some(prompt) = prompt_of(region) else {
        return rasterize_any(region, image);
    };
    let seg = segmenter.ok_or_else(|| Error::UnsupportedRegion(NEEDS_SEGMENTER.into()))?;
    // A panic inside a previous call leaves at worst an empty cache.
    let mut seg = seg.lock().unwrap_or_else(|e| e.into_inner());
    Ok(seg.segment(image, &prompt)?.mask)
}
