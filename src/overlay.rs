//! A picture of what the model looked at: the region tinted, its bounding
//! box (green) and the focal crop window (red) drawn on the image.

use crate::error::{Error, Result};
use crate::image::{Mask, RgbImage};

const TINT: [u8; 3] = [255, 64, 160];
const BOX: [u8; 3] = [40, 220, 60];
const WINDOW: [u8; 3] = [240, 40, 40];

fn rect(img: &mut RgbImage, [x0, y0, x1, y1]: [u32; 4], color: [u8; 3], thick: u32) {
    let (w, h) = (img.width, img.height);
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let mut put = |x: u32, y: u32| {
        if x < w && y < h {
            let i = (y as usize * w as usize + x as usize) * 3;
            img.data[i..i + 3].copy_from_slice(&color);
        }
    };
    for t in 0..thick {
        for x in x0..x1 {
            put(x, y0 + t);
            put(x, (y1 - 1).saturating_sub(t));
        }
        for y in y0..y1 {
            put(x0 + t, y);
            put((x1 - 1).saturating_sub(t), y);
        }
    }
}

/// The image with the mask blended in (45%), the mask box and the window.
pub fn draw(
    image: &RgbImage,
    mask: &Mask,
    mask_box: (u32, u32, u32, u32),
    window: [u32; 4],
) -> Result<RgbImage> {
    if mask.width != image.width || mask.height != image.height {
        return Err(Error::InvalidRegion("mask and image sizes differ".into()));
    }
    let mut out = image.clone();
    for (px, &m) in out.data.chunks_exact_mut(3).zip(&mask.data) {
        if m != 0 {
            for (c, t) in px.iter_mut().zip(TINT) {
                *c = ((*c as u32 * 55 + t as u32 * 45) / 100) as u8;
            }
        }
    }
    let thick = (image.width.max(image.height) / 300).max(1);
    rect(&mut out, window, WINDOW, thick);
    rect(
        &mut out,
        [mask_box.0, mask_box.1, mask_box.2, mask_box.3],
        BOX,
        thick,
    );
    Ok(out)
}

/// Draws clicks on `img`: a filled square with a dark rim, green for
/// positive and red for negative clicks (points outside are skipped).
pub fn draw_clicks(img: &mut RgbImage, clicks: &[(f32, f32, bool)]) {
    let r = (img.width.max(img.height) / 150).max(3) as i64;
    for &(x, y, positive) in clicks {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let (cx, cy) = (x.floor() as i64, y.floor() as i64);
        let color = if positive { CLICK_POS } else { CLICK_NEG };
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (cx + dx, cy + dy);
                if px < 0 || py < 0 || px >= i64::from(img.width) || py >= i64::from(img.height) {
                    continue;
                }
                let rim = dx.abs() == r || dy.abs() == r;
                let i = (py as usize * img.width as usize + px as usize) * 3;
                img.data[i..i + 3].copy_from_slice(if rim { &[0, 0, 0] } else { &color });
            }
        }
    }
}

const CLICK_POS: [u8; 3] = [60, 255, 60];
const CLICK_NEG: [u8; 3] = [255, 40, 40];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_clicks_inside_only() {
        let mut img = RgbImage::new(20, 10, vec![100; 600]).unwrap();
        draw_clicks(
            &mut img,
            &[(5.5, 5.5, true), (-50.0, 3.0, false), (f32::NAN, 1.0, true)],
        );
        assert_eq!(
            &img.data[(5 * 20 + 5) * 3..(5 * 20 + 5) * 3 + 3],
            &CLICK_POS
        );
        assert_eq!(&img.data[(9 * 20 + 19) * 3..], &[100, 100, 100]);
        draw_clicks(&mut img, &[(19.0, 9.0, false)]);
        assert_eq!(&img.data[(9 * 20 + 19) * 3..], &CLICK_NEG);
    }

    #[test]
    fn tints_region_and_draws_boxes() {
        let img = RgbImage::new(20, 10, vec![100; 600]).unwrap();
        let mut m = vec![0u8; 200];
        m[5 * 20 + 5] = 1;
        let mask = Mask::new(20, 10, m).unwrap();
        let out = draw(&img, &mask, (5, 5, 6, 6), [0, 0, 20, 10]).unwrap();
        // The one mask pixel is the box too (drawn last); a corner is the window.
        assert_eq!(&out.data[(5 * 20 + 5) * 3..(5 * 20 + 5) * 3 + 3], &BOX);
        assert_eq!(&out.data[0..3], &WINDOW);
        // Untouched pixels keep their colour.
        assert_eq!(
            &out.data[(3 * 20 + 10) * 3..(3 * 20 + 10) * 3 + 3],
            &[100, 100, 100]
        );
    }
}
