//! SAM's image preprocessing, bit-exact with transformers' `SamProcessor`
//! (PIL image processor): longest side to `longest_edge` (Pillow bilinear
//! with antialias, on 8-bit RGB), rescale by 1/255 (in f64, rounded to f32),
//! normalise `(x - mean) / std` in f32, zero padding at the bottom and right
//! to a square of `image_size`; and the processor's mapping of prompt
//! coordinates into the resized frame. The official `SamPredictor`
//! (MobileSAM's) resizes the same way (`ResizeLongestSide`: torchvision's
//! PIL resize) and normalises the 0..255 values ([`PixelScale::Byte`]).

use super::tensors::PixelScale;
use crate::error::{Error, Result};
use crate::image::ImageView;
use crate::preprocess::{resize_threads, Filter, Levels};

/// The processor's rescale factor (`1 / 255` as a Python float).
const RESCALE: f64 = 1.0 / 255.0;

/// One preprocessed image.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessed {
    /// [3, S, S] planar, padded with zeros after normalisation.
    pub pixels: Vec<f32>,
    /// Side S of the padded square.
    pub side: u32,
    /// (height, width) of the original image.
    pub original: (u32, u32),
    /// (height, width) after the resize, before padding.
    pub resized: (u32, u32),
}

/// `_get_preprocess_shape`: (height, width) with the longest side at
/// `longest`, each rounded half up (`int(x + 0.5)`), at least 1.
pub fn resized_shape(height: u32, width: u32, longest: u32) -> (u32, u32) {
    let scale = f64::from(longest) / f64::from(height.max(width));
    let round = |v: u32| ((f64::from(v) * scale + 0.5) as u32).clamp(1, longest);
    (round(height), round(width))
}

/// Resizes, normalises and pads `image` as the processor does.
pub fn preprocess(
    image: &ImageView<'_>,
    longest: u32,
    scale: PixelScale,
    mean: [f32; 3],
    std: [f32; 3],
    threads: usize,
) -> Result<Preprocessed> {
    let (h, w) = (image.height(), image.width());
    let (rh, rw) = resized_shape(h, w, longest);
    // Resized in the caller's layout (channels resize independently), the
    // RGB channels picked after: no RGB copy of the whole image.
    let (bpp, rgb) = (
        image.format().bytes_per_pixel(),
        image.format().rgb_offsets(),
    );
    let small = resize_threads(
        image.data(),
        w,
        h,
        image.stride(),
        bpp,
        rw,
        rh,
        Filter::Bilinear,
        Levels::Raw,
        threads,
    )?;
    let s = longest as usize;
    let plane = s * s;
    let mut pixels = vec![0f32; 3 * plane];
    let row_len = rw as usize * bpp;
    for y in 0..rh as usize {
        let row = &small[y * row_len..(y + 1) * row_len];
        for (x, px) in row.chunks_exact(bpp).enumerate() {
            for (c, &at) in rgb.iter().enumerate() {
                let v = match scale {
                    PixelScale::Unit => (f64::from(px[at]) * RESCALE) as f32,
                    PixelScale::Byte => f32::from(px[at]),
                };
                pixels[c * plane + y * s + x] = (v - mean[c]) / std[c];
            }
        }
    }
    Ok(Preprocessed {
        pixels,
        side: longest,
        original: (h, w),
        resized: (rh, rw),
    })
}

/// `_normalize_coordinates`: a point (x, y) in original pixels to the
/// resized frame, in f64 as the processor computes it.
pub fn map_point(p: [f32; 2], original: (u32, u32), resized: (u32, u32)) -> Result<[f64; 2]> {
    if !p.iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "prompt coordinate {p:?} is not finite"
        )));
    }
    let (oh, ow) = (f64::from(original.0), f64::from(original.1));
    let (rh, rw) = (f64::from(resized.0), f64::from(resized.1));
    Ok([f64::from(p[0]) * (rw / ow), f64::from(p[1]) * (rh / oh)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pixel layout, with a padded stride, gives what its packed RGB
    /// copy gives (the resize runs in the caller's layout).
    #[test]
    fn every_layout_matches_its_rgb_copy() {
        use crate::image::PixelFormat;
        let (w, h, pad) = (37u32, 23u32, 5usize);
        for (seed, format) in (1..).zip([
            PixelFormat::Rgb8,
            PixelFormat::Rgba8,
            PixelFormat::Bgra8,
            PixelFormat::Gray8,
        ]) {
            let stride = w as usize * format.bytes_per_pixel() + pad;
            let data = crate::testing::noise(stride * h as usize, seed);
            let view = ImageView::new(&data, w, h, stride, format).unwrap();
            let rgb = view.to_rgb();
            for (longest, scale) in [(16, PixelScale::Unit), (64, PixelScale::Byte)] {
                let run = |v: &ImageView| {
                    preprocess(v, longest, scale, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25], 2).unwrap()
                };
                assert_eq!(
                    run(&view),
                    run(&rgb.view().unwrap()),
                    "{format:?} to {longest}"
                );
            }
        }
    }

    #[test]
    fn shapes_round_half_up() {
        assert_eq!(resized_shape(1365, 2048, 1024), (683, 1024));
        assert_eq!(resized_shape(120, 160, 256), (192, 256));
        assert_eq!(resized_shape(1, 5000, 1024), (1, 1024));
    }
}
