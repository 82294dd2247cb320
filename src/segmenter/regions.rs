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

/// Click labels as every interface takes them: one per point, 1 positive,
/// 0 negative; none given means every click is positive. `what` names the
/// labels in errors (`--labels`, `point_labels`, ...).
pub fn click_labels(labels: Option<&[i64]>, n_points: usize, what: &str) -> Result<Vec<bool>> {
    let Some(labels) = labels else {
        return Ok(vec![true; n_points]);
    };
    if labels.len() != n_points {
        return Err(Error::InvalidArgument(format!(
            "{what}: {} labels for {n_points} points: give one label per point",
            labels.len()
        )));
    }
    labels
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(Error::InvalidArgument(format!(
                "{what}[{i}] is {v}: labels are 1 (positive) or 0 (negative)"
            ))),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn click_labels_take_one_0_or_1_per_point() {
        assert_eq!(click_labels(None, 2, "l").unwrap(), [true, true]);
        assert_eq!(click_labels(Some(&[1, 0]), 2, "l").unwrap(), [true, false]);
        for (bad, n) in [(&[1, 2][..], 2), (&[1][..], 2), (&[-1][..], 1)] {
            let e = click_labels(Some(bad), n, "l").unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
    }
}
