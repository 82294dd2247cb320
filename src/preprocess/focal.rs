//! The focal window: the crop around the region that the second view sees
//! (MODEL.md section 1, integer-exact with the reference).

use crate::error::{Error, Result};
use crate::image::Mask;

/// Minimum side of the region's box before it is tripled.
pub const MIN_BOX_SIDE: u32 = 48;

/// A pixel rectangle `[x0, x1) x [y0, y1)`, non-empty and inside its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl Window {
    /// Width `x1 - x0`.
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    /// Height `y1 - y0`.
    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }

    /// Whether the window is the whole `width x height` image.
    pub fn is_full(&self, width: u32, height: u32) -> bool {
        self.x0 == 0 && self.y0 == 0 && self.x1 == width && self.y1 == height
    }

    /// `[x0, y0, x1, y1]`.
    pub fn to_array(&self) -> [u32; 4] {
        [self.x0, self.y0, self.x1, self.y1]
    }
}

/// One axis of the window: tight extent `[b0, b1)` in an image of `size` pixels.
///
/// Reference (Python): `c = b0 + w / 2` (float), `w' = max(w, 48)`,
/// `s = int(c - w' / 2)` (truncation toward zero), window `[max(s - w', 0), min(s + 2w', size))`.
fn axis(b0: u32, b1: u32, size: u32) -> (u32, u32) {
    let w = i64::from(b1) - i64::from(b0);
    // Every quantity is an integer or a half-integer below 2^16: exact in f64.
    let centre = b0 as f64 + w as f64 / 2.0;
    let wp = w.max(i64::from(MIN_BOX_SIDE));
    let start = (centre - wp as f64 / 2.0).trunc() as i64;
    let lo = (start - wp).max(0);
    let hi = (start + 2 * wp).min(i64::from(size));
    // 0 <= lo and hi <= size <= u32::MAX; the clamps keep the casts lossless.
    (lo.clamp(0, i64::from(size)) as u32, hi.max(0) as u32)
}

/// The focal window of a mask (MODEL.md section 1):
/// the region's tight box, grown to at least 48 px around its (float) centre, its
/// top-left corner truncated toward zero (Python `int()`), then widened to 3x around the
/// centre and clipped to the image (not shifted).
///
/// Errors: `InvalidArgument` for an inconsistent mask, `InvalidRegion` for an empty one.
pub fn focal_window(mask: &Mask) -> Result<Window> {
    mask.validate()?;
    let (bx0, by0, bx1, by1) = mask
        .bbox()
        .ok_or_else(|| Error::InvalidRegion("region is empty (no mask pixel is set)".into()))?;
    window_of_box((bx0, by0, bx1, by1), mask.width, mask.height)
}

/// What one pass over a mask tells: its box, its pixel count and its focal window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskSummary {
    /// Tight box `(x0, y0, x1, y1)`, exclusive ends ([`Mask::bbox`]).
    pub bbox: (u32, u32, u32, u32),
    /// Pixels in the region ([`Mask::count`]).
    pub pixels: usize,
    /// [`focal_window`] of the mask.
    pub window: Window,
}

/// The [`MaskSummary`] of `mask`, `None` for an empty mask.
///
/// Errors: `InvalidArgument` for an inconsistent mask.
pub fn summarize(mask: &Mask) -> Result<Option<MaskSummary>> {
    mask.validate()?;
    let Some((bbox, pixels)) = mask.bbox_count() else {
        return Ok(None);
    };
    let window = window_of_box(bbox, mask.width, mask.height)?;
    Ok(Some(MaskSummary {
        bbox,
        pixels,
        window,
    }))
}

/// The focal window of the box `(bx0, by0, bx1, by1)` in a `width x height` image.
fn window_of_box(
    (bx0, by0, bx1, by1): (u32, u32, u32, u32),
    width: u32,
    height: u32,
) -> Result<Window> {
    let (x0, x1) = axis(bx0, bx1, width);
    let (y0, y1) = axis(by0, by1, height);
    if x0 >= x1 || y0 >= y1 {
        // Cannot happen for a non-empty box inside the image; kept as a guard.
        return Err(Error::InvalidRegion(format!(
            "focal window [{x0}, {y0}, {x1}, {y1}) is empty"
        )));
    }
    Ok(Window { x0, y0, x1, y1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_with(w: u32, h: u32, pixels: &[(u32, u32)]) -> Mask {
        let mut m = Mask::zeros(w, h).unwrap();
        for &(x, y) in pixels {
            m.data[(y * w + x) as usize] = 1;
        }
        m
    }

    fn rect(w: u32, h: u32, x0: u32, y0: u32, x1: u32, y1: u32) -> Mask {
        let mut px = Vec::new();
        for y in y0..y1 {
            for x in x0..x1 {
                px.push((x, y));
            }
        }
        mask_with(w, h, &px)
    }

    /// Straight transcription of the Python reference, for cross-checking.
    fn reference(w: u32, h: u32, b: (u32, u32, u32, u32)) -> [u32; 4] {
        let (bx0, by0, bx1, by1) = (b.0 as f64, b.1 as f64, b.2 as f64, b.3 as f64);
        let (bw, bh) = (bx1 - bx0, by1 - by0);
        let (xc, yc) = (bx0 + bw / 2.0, by0 + bh / 2.0);
        let (ww, hh) = (bw.max(48.0), bh.max(48.0));
        let (x0, y0) = ((xc - ww / 2.0).trunc(), (yc - hh / 2.0).trunc());
        [
            (x0 - ww).max(0.0) as u32,
            (y0 - hh).max(0.0) as u32,
            (x0 + 2.0 * ww).min(w as f64) as u32,
            (y0 + 2.0 * hh).min(h as f64) as u32,
        ]
    }

    #[test]
    fn empty_mask_is_an_error() {
        let m = Mask::zeros(10, 10).unwrap();
        assert!(matches!(focal_window(&m), Err(Error::InvalidRegion(_))));
        let bad = Mask {
            width: 10,
            height: 10,
            data: vec![1; 3],
        };
        assert!(matches!(focal_window(&bad), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn one_pixel() {
        // pixel (50, 40): centre (50.5, 40.5), start int(26.5) = 26, int(16.5) = 16
        let m = mask_with(200, 150, &[(50, 40)]);
        let win = focal_window(&m).unwrap();
        assert_eq!(win.to_array(), [0, 0, 26 + 96, 16 + 96]);
        // pixel (100, 100) in a big image: start int(76.5) = 76 -> [28, 172)
        let m = mask_with(400, 400, &[(100, 100)]);
        assert_eq!(focal_window(&m).unwrap().to_array(), [28, 28, 172, 172]);
    }

    #[test]
    fn tiny_blob_near_corner_truncates_toward_zero() {
        // 5x5 blob at (2..7, 3..8): centre (4.5, 5.5); 4.5 - 24 = -19.5 -> int = -19
        // (floor would give -20); 5.5 - 24 = -18.5 -> -18.
        let m = rect(97, 61, 2, 3, 7, 8);
        let win = focal_window(&m).unwrap();
        assert_eq!(win.to_array(), [0, 0, 77, 61]);
        assert_eq!(win.to_array(), reference(97, 61, (2, 3, 7, 8)));
        // -19 + 96 = 77 (floor would give 76); -18 + 96 = 78 clipped to 61.
    }

    #[test]
    fn far_right_bottom_edges() {
        let m = rect(300, 180, 290, 170, 300, 180);
        let win = focal_window(&m).unwrap();
        assert_eq!(win.to_array(), reference(300, 180, (290, 170, 300, 180)));
        assert_eq!(win.x1, 300);
        assert_eq!(win.y1, 180);
        // centre 295, start 271, window [223, 300)
        assert_eq!(win.x0, 223);
        // single pixel at the bottom-right corner
        let m = mask_with(300, 180, &[(299, 179)]);
        assert_eq!(focal_window(&m).unwrap().to_array(), [227, 107, 300, 180]);
    }

    #[test]
    fn full_image_mask() {
        let m = rect(160, 120, 0, 0, 160, 120);
        let win = focal_window(&m).unwrap();
        assert!(win.is_full(160, 120));
        let m = rect(1, 1, 0, 0, 1, 1);
        assert_eq!(focal_window(&m).unwrap().to_array(), [0, 0, 1, 1]);
    }

    #[test]
    fn odd_sizes_match_reference() {
        // Exhaustive-ish sweep of boxes in small odd-sized images.
        for &(w, h) in &[(97u32, 61u32), (13, 200), (301, 7), (49, 49)] {
            let step_x = (w / 9).max(1);
            let step_y = (h / 9).max(1);
            for x0 in (0..w).step_by(step_x as usize) {
                for x1 in ((x0 + 1)..=w).step_by(step_x as usize) {
                    for y0 in (0..h).step_by(step_y as usize) {
                        for y1 in ((y0 + 1)..=h).step_by(step_y as usize) {
                            let m = mask_with(w, h, &[(x0, y0), (x1 - 1, y1 - 1)]);
                            let win = focal_window(&m).unwrap();
                            assert_eq!(
                                win.to_array(),
                                reference(w, h, (x0, y0, x1, y1)),
                                "{w}x{h} box {x0},{y0},{x1},{y1}"
                            );
                            assert!(win.x0 < win.x1 && win.y0 < win.y1);
                            assert!(win.x0 <= x0 && win.x1 >= x1);
                            assert!(win.y0 <= y0 && win.y1 >= y1);
                        }
                    }
                }
            }
        }
    }
}
