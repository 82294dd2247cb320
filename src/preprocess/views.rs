//! The two 4-channel views of a region (MODEL.md section 1, fixtures README "Pipeline" 2).

use super::focal::{summarize, MaskSummary, Window};
use super::twopass::{resize_views, tables, Source};
use crate::error::{Error, Result};
use crate::image::{ImageView, Mask, RgbImage};

/// Channels per view: R, G, B, mask.
pub const VIEW_CHANNELS: usize = 4;
/// Largest accepted view side (the released models use 384).
pub const MAX_VIEW_SIZE: u32 = 4096;

/// The full and the focal view of one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Views {
    /// Whole image and mask: planar `[4, S, S]` f32 (R, G, B, mask; rows top to bottom).
    pub full: Vec<f32>,
    /// The focal window of image and mask, same layout.
    pub focal: Vec<f32>,
    /// The region as the full view sees it: the mask resized to `[S, S]`
    /// (0..=255, channel 3 of `full` before normalisation).
    pub full_mask: Vec<u8>,
    /// The focal window, in source pixels.
    pub window: Window,
    /// `full` and `focal` are bit-identical: the reference then skips the context
    /// provider and uses the full-view features for both.
    pub focal_is_full: bool,
}

/// One normalised value: `v = (f32)((f64)x * (1/255))`, then `(v - mean) / std` in f32.
#[inline]
pub(super) fn normalize(x: u8, mean: f32, std: f32) -> f32 {
    let v = (f64::from(x) * (1.0 / 255.0)) as f32;
    (v - mean) / std
}

/// Computes the full and the focal view of a region, each `[4, size, size]` planar f32:
/// channels 0-2 are the Pillow-exact bicubic resize of the (cropped) RGB image, channel 3
/// the same resize of the (cropped) mask as 0 / 255; every value is
/// `((f32)(x / 255.0) - mean[c]) / std[c]` (the mask channel uses `mean[0]`, `std[0]`).
/// The focal view crops image and mask to `focal::focal_window` before resizing.
///
/// Errors: `InvalidArgument` for an inconsistent image or mask, a mask of another size,
/// a size outside `1..=MAX_VIEW_SIZE`, or a zero / non-finite `std` or non-finite
/// `mean`; `InvalidRegion` for an empty mask.
pub fn make_views(
    image: &RgbImage,
    mask: &Mask,
    size: u32,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Views> {
    make_views_threads(image, mask, size, mean, std, 1)
}

/// [`make_views`] with the resizes split over up to `threads` threads (0 and 1: the
/// calling thread only). The result does not depend on `threads`.
pub fn make_views_threads(
    image: &RgbImage,
    mask: &Mask,
    size: u32,
    mean: [f32; 3],
    std: [f32; 3],
    threads: usize,
) -> Result<Views> {
    let view = image.view()?;
    check_args(&view, mask, size, mean, std)?;
    let summary = summarize(mask)?
        .ok_or_else(|| Error::InvalidRegion("region is empty (no mask pixel is set)".into()))?;
    make_views_of(&view, mask, &summary, size, mean, std, threads)
}

/// The checks of [`make_views_of`] before any pixel is read.
fn check_args(
    image: &ImageView,
    mask: &Mask,
    size: u32,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<()> {
    mask.validate()?;
    if size == 0 || size > MAX_VIEW_SIZE {
        return Err(Error::InvalidArgument(format!(
            "view size {size} is out of range (1..={MAX_VIEW_SIZE})"
        )));
    }
    if mask.width != image.width() || mask.height != image.height() {
        return Err(Error::InvalidArgument(format!(
            "mask is {}x{} but the image is {}x{}",
            mask.width,
            mask.height,
            image.width(),
            image.height()
        )));
    }
    if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !s.is_finite() || *s == 0.0) {
        return Err(Error::InvalidArgument(format!(
            "normalisation mean {mean:?} / std {std:?} must be finite with std != 0"
        )));
    }
    Ok(())
}

/// [`make_views_threads`] of an image in any pixel layout (read as
/// `ImageView::to_rgb` converts it, without the copy) and of a mask whose
/// [`MaskSummary`] the caller has ([`super::focal::summarize`] of this mask: one
/// pass gives the box, the pixel count and the window).
///
/// Errors as [`make_views`]; also `InvalidArgument` for a summary whose box or
/// window is not inside the image.
pub fn make_views_of(
    image: &ImageView,
    mask: &Mask,
    summary: &MaskSummary,
    size: u32,
    mean: [f32; 3],
    std: [f32; 3],
    threads: usize,
) -> Result<Views> {
    check_args(image, mask, size, mean, std)?;
    let (w, h) = (image.width(), image.height());
    let window = summary.window;
    let (bx0, by0, bx1, by1) = summary.bbox;
    let inside = |x0: u32, y0: u32, x1: u32, y1: u32| x0 < x1 && y0 < y1 && x1 <= w && y1 <= h;
    if !inside(window.x0, window.y0, window.x1, window.y1) || !inside(bx0, by0, bx1, by1) {
        return Err(Error::InvalidArgument(format!(
            "mask summary {summary:?} is not inside the {w}x{h} image"
        )));
    }
    let whole = Window {
        x0: 0,
        y0: 0,
        x1: w,
        y1: h,
    };
    let wins: &[Window] = if window == whole {
        &[whole]
    } else {
        &[whole, window]
    };
    let src = Source {
        image,
        mask,
        bbox: summary.bbox,
    };
    let (mut out, full_mask) = resize_views(&src, wins, size, &tables(mean, std), threads);
    let full = out.swap_remove(0);
    let focal = out.pop().unwrap_or_else(|| full.clone());
    let focal_is_full = full
        .iter()
        .zip(&focal)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    Ok(Views {
        full,
        focal,
        full_mask,
        window,
        focal_is_full,
    })
}

/// The views as two separate Pillow resizes of the RGB copy and the 0 / 255 mask
/// (the straightforward path, kept as the tests' oracle).
#[cfg(test)]
pub(crate) mod oracle {
    use super::*;
    use crate::preprocess::focal::focal_window;
    use crate::preprocess::resize::{resize_threads, Filter, Levels};

    /// One view: `[4, size, size]` from the window `win` of `image` / `mask`,
    /// and its mask channel before normalisation.
    pub(crate) fn view(
        image: &RgbImage,
        mask: &Mask,
        win: Window,
        size: u32,
        mean: [f32; 3],
        std: [f32; 3],
        threads: usize,
    ) -> Result<(Vec<f32>, Vec<u8>)> {
        let (w, h) = (win.width(), win.height());
        let iw = image.width as usize;
        let (x0, y0) = (win.x0 as usize, win.y0 as usize);
        // Window inside the image (checked by the caller): offsets are in range.
        let rgb = resize_threads(
            &image.data[(y0 * iw + x0) * 3..],
            w,
            h,
            iw * 3,
            3,
            size,
            size,
            Filter::Bicubic,
            Levels::Raw,
            threads,
        )?;
        // The mask as an 8-bit image with values 0 / 255 (Pillow: `fromarray(m * 255)`;
        // its RGB conversion has three equal channels, so one channel suffices),
        // read straight from the mask's window.
        let m = resize_threads(
            &mask.data[y0 * iw + x0..],
            w,
            h,
            iw,
            1,
            size,
            size,
            Filter::Bicubic,
            Levels::Binary,
            threads,
        )?;

        let plane = size as usize * size as usize;
        let mut out = vec![0f32; VIEW_CHANNELS * plane];
        let (rgb_planes, mask_plane) = out.split_at_mut(3 * plane);
        for (c, dst) in rgb_planes.chunks_exact_mut(plane).enumerate() {
            for (d, px) in dst.iter_mut().zip(rgb.chunks_exact(3)) {
                *d = normalize(px[c], mean[c], std[c]);
            }
        }
        for (d, &v) in mask_plane.iter_mut().zip(&m) {
            *d = normalize(v, mean[0], std[0]);
        }
        Ok((out, m))
    }

    /// Both views and the full view's mask channel.
    pub(crate) fn views(
        image: &RgbImage,
        mask: &Mask,
        size: u32,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
        let (w, h) = (image.width, image.height);
        let whole = Window {
            x0: 0,
            y0: 0,
            x1: w,
            y1: h,
        };
        let win = focal_window(mask).unwrap();
        let (full, m) = view(image, mask, whole, size, mean, std, 1).unwrap();
        let (focal, _) = view(image, mask, win, size, mean, std, 1).unwrap();
        (full, focal, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PixelFormat;
    use crate::preprocess::focal::focal_window;
    use crate::testing::noise;

    const HALF: [f32; 3] = [0.5; 3];

    fn image(w: u32, h: u32) -> RgbImage {
        let data = (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn normalisation_matches_numpy_recipe() {
        // 0 -> -1, 255 -> 1, 128 -> (f32(128/255) - 0.5) / 0.5
        assert_eq!(normalize(0, 0.5, 0.5), -1.0);
        assert_eq!(normalize(255, 0.5, 0.5), 1.0);
        let v = (128.0f64 / 255.0) as f32;
        assert_eq!(normalize(128, 0.5, 0.5), (v - 0.5) / 0.5);
    }

    /// Masks of a `w x h` image: everything, a blob, one pixel near a corner, a
    /// wide band (focal window as wide as the image), non-0/1 bytes.
    fn masks(w: u32, h: u32) -> Vec<Mask> {
        let mut out = vec![Mask::new(w, h, vec![1; (w * h) as usize]).unwrap()];
        let mut blob = Mask::zeros(w, h).unwrap();
        for y in h / 3..(h / 3 + h / 4).max(h / 3 + 1) {
            for x in w / 2..(w / 2 + w / 5).max(w / 2 + 1) {
                blob.data[(y * w + x) as usize] = 1;
            }
        }
        out.push(blob);
        let mut dot = Mask::zeros(w, h).unwrap();
        dot.data[((h - 1) * w + 1) as usize] = 1;
        out.push(dot);
        let mut band = Mask::zeros(w, h).unwrap();
        for x in 0..w {
            band.data[((h / 2) * w + x) as usize] = if x % 3 == 0 { 7 } else { 0 };
        }
        out.push(band);
        out
    }

    /// The caller's pixels in `format` with `pad` bytes after each row.
    fn layout(w: u32, h: u32, format: PixelFormat, pad: usize, seed: u64) -> (Vec<u8>, usize) {
        let stride = w as usize * format.bytes_per_pixel() + pad;
        // The last row needs no padding.
        (noise(stride * h as usize - pad, seed), stride)
    }

    #[test]
    fn matches_the_oracle_on_every_layout_stride_and_thread_count() {
        use crate::image::PixelFormat::*;
        let mean = [0.481_454_66, 0.457_827_5, 0.408_210_73];
        let std = [0.268_629_54, 0.261_302_6, 0.275_777_1];
        for (w, h, sizes) in [
            (97u32, 61u32, &[16u32, 61, 97, 130][..]),
            (301, 7, &[24][..]),
            (13, 200, &[37][..]),
            (700, 500, &[384][..]),
        ] {
            for (f, format) in [Rgb8, Rgba8, Bgra8, Gray8].into_iter().enumerate() {
                let pad = [0, 5, 3, 1][f];
                let (buf, stride) = layout(w, h, format, pad, u64::from(w * 31 + h) + f as u64);
                let view = ImageView::new(&buf, w, h, stride, format).unwrap();
                let rgb = view.to_rgb();
                for mask in masks(w, h) {
                    let summary = summarize(&mask).unwrap().unwrap();
                    for &size in sizes {
                        let (full, focal, m) = oracle::views(&rgb, &mask, size, mean, std);
                        for threads in [1, 2, 3] {
                            let v = make_views_of(&view, &mask, &summary, size, mean, std, threads)
                                .unwrap();
                            let what = format!("{w}x{h} {format:?} -> {size}, {threads} threads");
                            assert!(
                                v.full
                                    .iter()
                                    .zip(&full)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{what}"
                            );
                            assert!(
                                v.focal
                                    .iter()
                                    .zip(&focal)
                                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{what}"
                            );
                            assert_eq!((v.full.len(), v.focal.len()), (full.len(), focal.len()));
                            assert_eq!(v.full_mask, m, "{what}");
                            assert_eq!(v.window, summary.window);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_summary_outside_the_image_is_an_error() {
        let img = image(20, 10);
        let mask = Mask::new(20, 10, vec![1; 200]).unwrap();
        let mut s = summarize(&mask).unwrap().unwrap();
        s.window.x1 = 21;
        let view = img.view().unwrap();
        assert!(make_views_of(&view, &mask, &s, 8, HALF, HALF, 1).is_err());
        let mut s = summarize(&mask).unwrap().unwrap();
        s.bbox = (3, 3, 3, 4);
        assert!(make_views_of(&view, &mask, &s, 8, HALF, HALF, 1).is_err());
    }

    #[test]
    fn full_mask_gives_identical_views() {
        let img = image(40, 30);
        let mask = Mask::new(40, 30, vec![1; 1200]).unwrap();
        let v = make_views(&img, &mask, 16, HALF, HALF).unwrap();
        assert!(v.focal_is_full);
        assert_eq!(v.full.len(), 4 * 16 * 16);
        assert_eq!(v.full, v.focal);
        assert!(v.full[3 * 256..].iter().all(|&x| x == 1.0));
    }

    #[test]
    fn small_region_gives_a_crop() {
        let img = image(300, 200);
        let mut mask = Mask::zeros(300, 200).unwrap();
        mask.data[150 * 300 + 250] = 1;
        let v = make_views(&img, &mask, 24, HALF, HALF).unwrap();
        assert!(!v.focal_is_full);
        assert_eq!(v.window, focal_window(&mask).unwrap());
        assert!(v
            .full
            .iter()
            .chain(&v.focal)
            .all(|x| (-1.0..=1.0).contains(x)));
    }

    #[test]
    fn errors() {
        let img = image(20, 10);
        let empty = Mask::zeros(20, 10).unwrap();
        assert!(matches!(
            make_views(&img, &empty, 8, HALF, HALF),
            Err(Error::InvalidRegion(_))
        ));
        let other = Mask::new(10, 20, vec![1; 200]).unwrap();
        assert!(make_views(&img, &other, 8, HALF, HALF).is_err());
        let ok = Mask::new(20, 10, vec![1; 200]).unwrap();
        assert!(make_views(&img, &ok, 0, HALF, HALF).is_err());
        assert!(make_views(&img, &ok, MAX_VIEW_SIZE + 1, HALF, HALF).is_err());
        assert!(make_views(&img, &ok, 8, HALF, [0.5, 0.0, 0.5]).is_err());
        assert!(make_views(&img, &ok, 8, [f32::NAN; 3], HALF).is_err());
        let bad = RgbImage {
            width: 20,
            height: 10,
            data: vec![0; 5],
        };
        assert!(make_views(&bad, &ok, 8, HALF, HALF).is_err());
    }
}
