//! Images and masks as the engine sees them.
//!
//! * [`ImageView`] borrows caller memory (any supported pixel format, any row stride) and
//!   is validated once, at construction; every accessor after that is panic-free.
//! * [`RgbImage`] is an owned, packed RGB8 image (what the preprocessing consumes).
//! * [`Mask`] is an owned binary mask, one byte per pixel, 0 or 1.
//!
//! [`load_rgb`] and [`load_mask`] decode PNG/JPEG files with the `image` crate; they exist
//! for the CLI and the tests only, the core never needs a decoder.

use crate::error::{Error, Result};

/// Largest accepted image side, in pixels (both width and height).
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Memory layout of one pixel of an [`ImageView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// R, G, B; one byte each.
    Rgb8,
    /// R, G, B, A; one byte each.
    Rgba8,
    /// B, G, R, A; one byte each (the usual little-endian "ARGB32" of UI toolkits).
    Bgra8,
    /// One byte of luminance.
    Gray8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => 4,
            PixelFormat::Gray8 => 1,
        }
    }

    /// Byte offsets of R, G and B within a pixel (gray: all 0).
    pub const fn rgb_offsets(self) -> [usize; 3] {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => [0, 1, 2],
            PixelFormat::Bgra8 => [2, 1, 0],
            PixelFormat::Gray8 => [0, 0, 0],
        }
    }

    /// Whether the format carries an alpha channel.
    pub const fn has_alpha(self) -> bool {
        matches!(self, PixelFormat::Rgba8 | PixelFormat::Bgra8)
    }
}

/// Checks one image side against `0 < side <= MAX_IMAGE_SIDE`.
pub(crate) fn check_side(what: &str, side: u32) -> Result<()> {
    if side == 0 || side > MAX_IMAGE_SIDE {
        return Err(Error::InvalidArgument(format!(
            "{what} {side} is out of range (1..={MAX_IMAGE_SIDE})"
        )));
    }
    Ok(())
}

/// `width * height * channels` with overflow checks.
pub(crate) fn checked_len(width: u32, height: u32, channels: usize) -> Result<usize> {
    (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| Error::InvalidArgument(format!("image {width}x{height} is too large")))
}

/// A borrowed, validated image: `height` rows of `width` pixels, row `y` starting at byte
/// `y * stride` of `data`. The last row only needs `width * bpp` bytes (no trailing
/// padding is required).
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    data: &'a [u8],
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
}

impl<'a> ImageView<'a> {
    /// Validates and wraps caller memory.
    ///
    /// Errors (`InvalidArgument`): a side is 0 or above [`MAX_IMAGE_SIDE`], the stride is
    /// smaller than one row of pixels, or `data` is shorter than
    /// `stride * (height - 1) + width * bpp`.
    pub fn new(
        data: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self> {
        check_side("image width", width)?;
        check_side("image height", height)?;
        let bpp = format.bytes_per_pixel();
        let row = (width as usize)
            .checked_mul(bpp)
            .ok_or_else(|| Error::InvalidArgument("image row too large".into()))?;
        if stride < row {
            return Err(Error::InvalidArgument(format!(
                "stride {stride} is smaller than one row ({width} px x {bpp} bytes = {row})"
            )));
        }
        let need = stride
            .checked_mul(height as usize - 1)
            .and_then(|n| n.checked_add(row))
            .ok_or_else(|| Error::InvalidArgument("image size overflows".into()))?;
        if data.len() < need {
            return Err(Error::InvalidArgument(format!(
                "image buffer has {} bytes, {width}x{height} with stride {stride} needs {need}",
                data.len()
            )));
        }
        Ok(ImageView {
            data,
            width,
            height,
            stride,
            format,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from the start of one row to the start of the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The borrowed bytes (at least `stride * (height - 1) + width * bpp`).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The `width * bpp` bytes of row `y`; `None` when `y >= height`.
    pub fn row(&self, y: u32) -> Option<&'a [u8]> {
        if y >= self.height {
            return None;
        }
        let start = (y as usize) * self.stride;
        let len = (self.width as usize) * self.format.bytes_per_pixel();
        self.data.get(start..start + len)
    }

    /// Iterates over the rows (each exactly `width * bpp` bytes).
    fn rows(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.height).filter_map(move |y| self.row(y))
    }

    /// Converts to a packed RGB8 image: gray is replicated, BGRA is swapped, alpha is
    /// dropped (not composited).
    pub fn to_rgb(&self) -> RgbImage {
        let w = self.width as usize;
        let mut data = Vec::with_capacity(w * self.height as usize * 3);
        for row in self.rows() {
            match self.format {
                PixelFormat::Rgb8 => data.extend_from_slice(row),
                PixelFormat::Rgba8 => {
                    for p in row.chunks_exact(4) {
                        data.extend_from_slice(&p[..3]);
                    }
                }
                PixelFormat::Bgra8 => {
                    for p in row.chunks_exact(4) {
                        data.extend_from_slice(&[p[2], p[1], p[0]]);
                    }
                }
                PixelFormat::Gray8 => {
                    for &g in row {
                        data.extend_from_slice(&[g, g, g]);
                    }
                }
            }
        }
        RgbImage {
            width: self.width,
            height: self.height,
            data,
        }
    }

    /// The alpha channel as a mask (alpha > 0 -> 1) for `Rgba8` / `Bgra8`; `None` for
    /// formats without alpha.
    pub fn alpha(&self) -> Option<Mask> {
        if !self.format.has_alpha() {
            return None;
        }
        let mut data = Vec::with_capacity(self.width as usize * self.height as usize);
        for row in self.rows() {
            data.extend(row.chunks_exact(4).map(|p| u8::from(p[3] > 0)));
        }
        Some(Mask {
            width: self.width,
            height: self.height,
            data,
        })
    }
}

/// An owned, packed RGB8 image: `data.len() == width * height * 3`, rows top to bottom.
///
/// The fields are public for convenience; functions that consume an `RgbImage` check
/// their consistency ([`RgbImage::validate`]) and return an error rather than panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A validated image from packed RGB8 bytes.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        let img = RgbImage {
            width,
            height,
            data,
        };
        img.validate()?;
        Ok(img)
    }

    /// Checks sides (`1..=MAX_IMAGE_SIDE`) and `data.len() == width * height * 3`.
    pub fn validate(&self) -> Result<()> {
        check_side("image width", self.width)?;
        check_side("image height", self.height)?;
        let need = checked_len(self.width, self.height, 3)?;
        if self.data.len() != need {
            return Err(Error::InvalidArgument(format!(
                "RGB image {}x{} needs {need} bytes, has {}",
                self.width,
                self.height,
                self.data.len()
            )));
        }
        Ok(())
    }

    /// A borrowed view (format `Rgb8`, stride `width * 3`). Fails only when the public
    /// fields are inconsistent (see [`RgbImage::validate`]).
    pub fn view(&self) -> Result<ImageView<'_>> {
        self.validate()?;
        ImageView::new(
            &self.data,
            self.width,
            self.height,
            self.width as usize * 3,
            PixelFormat::Rgb8,
        )
    }
}

/// An owned binary mask, one byte per pixel, row-major: 1 = in the region, 0 = outside.
///
/// Functions reading a mask treat any non-zero byte as 1 and check
/// `data.len() == width * height` ([`Mask::validate`]) before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Mask {
    /// An all-zero mask. Errors on sides outside `1..=MAX_IMAGE_SIDE`.
    pub fn zeros(width: u32, height: u32) -> Result<Self> {
        check_side("mask width", width)?;
        check_side("mask height", height)?;
        Ok(Mask {
            width,
            height,
            data: vec![0; checked_len(width, height, 1)?],
        })
    }

    /// A validated mask from one byte per pixel; every non-zero byte becomes 1.
    pub fn new(width: u32, height: u32, mut data: Vec<u8>) -> Result<Self> {
        for v in data.iter_mut() {
            *v = u8::from(*v != 0);
        }
        let m = Mask {
            width,
            height,
            data,
        };
        m.validate()?;
        Ok(m)
    }

    /// A borrowed view (format `Gray8`, stride `width`), usable as a
    /// [`crate::Region::Mask`]. Fails only when the public fields are
    /// inconsistent (see [`Mask::validate`]).
    pub fn view(&self) -> Result<ImageView<'_>> {
        self.validate()?;
        ImageView::new(
            &self.data,
            self.width,
            self.height,
            self.width as usize,
            PixelFormat::Gray8,
        )
    }

    /// Checks sides (`1..=MAX_IMAGE_SIDE`) and `data.len() == width * height`.
    pub fn validate(&self) -> Result<()> {
        check_side("mask width", self.width)?;
        check_side("mask height", self.height)?;
        let need = checked_len(self.width, self.height, 1)?;
        if self.data.len() != need {
            return Err(Error::InvalidArgument(format!(
                "mask {}x{} needs {need} bytes, has {}",
                self.width,
                self.height,
                self.data.len()
            )));
        }
        Ok(())
    }

    /// Binarises an image view: a pixel is in the mask when
    /// * `Gray8`: its value is > 0;
    /// * `Rgb8`, `Rgba8`, `Bgra8`: any of R, G, B is > 0. Alpha is ignored (as when
    ///   Pillow converts an RGBA mask to "L"); use [`ImageView::alpha`] for alpha masks.
    pub fn from_view(view: &ImageView) -> Mask {
        let mut data = Vec::with_capacity(view.width as usize * view.height as usize);
        for row in view.rows() {
            match view.format {
                PixelFormat::Gray8 => data.extend(row.iter().map(|&v| u8::from(v > 0))),
                PixelFormat::Rgb8 => data.extend(
                    row.chunks_exact(3)
                        .map(|p| u8::from((p[0] | p[1] | p[2]) > 0)),
                ),
                PixelFormat::Rgba8 | PixelFormat::Bgra8 => data.extend(
                    row.chunks_exact(4)
                        .map(|p| u8::from((p[0] | p[1] | p[2]) > 0)),
                ),
            }
        }
        Mask {
            width: view.width,
            height: view.height,
            data,
        }
    }

    /// Number of pixels in the region.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// True when no pixel is in the region.
    pub fn is_empty(&self) -> bool {
        self.data.iter().all(|&v| v == 0)
    }

    /// Tight bounding box `(x0, y0, x1, y1)` of the region, `x1`/`y1` exclusive; `None`
    /// for an empty mask. Only the first `width * height` bytes are looked at.
    pub fn bbox(&self) -> Option<(u32, u32, u32, u32)> {
        self.bbox_count().map(|(b, _)| b)
    }

    /// [`Mask::bbox`] and [`Mask::count`] (of the first `width * height` bytes) in one
    /// pass over the mask.
    pub fn bbox_count(&self) -> Option<((u32, u32, u32, u32), usize)> {
        let w = self.width as usize;
        if w == 0 {
            return None;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        let mut count = 0;
        for (y, row) in self
            .data
            .chunks_exact(w)
            .take(self.height as usize)
            .enumerate()
        {
            // Whole blocks first (branch-free folds vectorise), then bytes.
            const B: usize = 64;
            let nonzero = |c: &[u8]| c.iter().fold(0u8, |a, &v| a | v) != 0;
            let Some(fb) = row.chunks(B).position(nonzero) else {
                continue;
            };
            let first = fb * B + row[fb * B..].iter().position(|&v| v != 0).unwrap_or(0);
            // `rchunks` counts blocks from the end: block `rb` ends at `len - rb * B`.
            let rb = row.rchunks(B).position(nonzero).unwrap_or(0);
            let end = row.len() - rb * B;
            let last = row[..end].iter().rposition(|&v| v != 0).unwrap_or(first);
            count += row[first..=last]
                .chunks(B)
                .map(|c| c.iter().fold(0u8, |a, &v| a + u8::from(v != 0)) as usize)
                .sum::<usize>();
            if y0 == usize::MAX {
                y0 = y;
            }
            y1 = y + 1;
            x0 = x0.min(first);
            x1 = x1.max(last + 1);
        }
        if y0 == usize::MAX {
            return None;
        }
        // All values are <= width/height, which are u32.
        Some(((x0 as u32, y0 as u32, x1 as u32, y1 as u32), count))
    }
}

// ------------------------------------------------------------------ file helpers

fn decode(path: &std::path::Path) -> Result<::image::DynamicImage> {
    let reader = ::image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let img = reader
        .decode()
        .map_err(|e| Error::Io(format!("{}: cannot decode image: {e}", path.display())))?;
    check_side("image width", img.width())?;
    check_side("image height", img.height())?;
    Ok(img)
}

/// Loads a PNG or JPEG file as packed RGB8 (16-bit images are scaled to 8 bits, alpha
/// is dropped, gray is replicated). For the CLI and tests; the engine core does not
/// decode files.
pub fn load_rgb(path: impl AsRef<std::path::Path>) -> Result<RgbImage> {
    let img = decode(path.as_ref())?.to_rgb8();
    let (width, height) = img.dimensions();
    RgbImage::new(width, height, img.into_raw())
}

/// Loads a mask image (PNG or JPEG). A pixel is in the mask when
/// * gray or gray+alpha files: the gray value is > 0 (alpha ignored);
/// * RGB or RGBA files: any of R, G, B is > 0 (alpha ignored).
///
/// 16-bit files are tested at full precision (a value of 1 counts). For the CLI and
/// tests; the engine core does not decode files.
pub fn load_mask(path: impl AsRef<std::path::Path>) -> Result<Mask> {
    let img = decode(path.as_ref())?;
    let (width, height) = (img.width(), img.height());
    let data: Vec<u8> = if img.color().has_color() {
        img.to_rgb16()
            .pixels()
            .map(|p| u8::from(p.0.iter().any(|&v| v > 0)))
            .collect()
    } else {
        img.to_luma16()
            .pixels()
            .map(|p| u8::from(p.0[0] > 0))
            .collect()
    };
    Mask::new(width, height, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_validation() {
        let buf = vec![0u8; 100];
        assert!(ImageView::new(&buf, 0, 1, 3, PixelFormat::Rgb8).is_err());
        assert!(ImageView::new(&buf, 1, 0, 3, PixelFormat::Rgb8).is_err());
        assert!(ImageView::new(&buf, MAX_IMAGE_SIDE + 1, 1, 1 << 20, PixelFormat::Gray8).is_err());
        // stride too small
        assert!(ImageView::new(&buf, 4, 2, 11, PixelFormat::Rgb8).is_err());
        // exact fit without trailing padding: 3 rows, stride 40, last row 4*4=16 bytes
        assert!(ImageView::new(&buf[..96], 4, 3, 40, PixelFormat::Rgba8).is_ok());
        assert!(ImageView::new(&buf[..95], 4, 3, 40, PixelFormat::Rgba8).is_err());
        // huge stride overflows instead of panicking
        assert!(ImageView::new(&buf, 2, 3, usize::MAX, PixelFormat::Gray8).is_err());
    }

    #[test]
    fn conversions() {
        // 2x2 BGRA with stride 10 (2 bytes of padding per row)
        let buf = [
            1, 2, 3, 0, 4, 5, 6, 255, 99, 99, //
            7, 8, 9, 10, 0, 0, 0, 0,
        ];
        let v = ImageView::new(&buf, 2, 2, 10, PixelFormat::Bgra8).unwrap();
        let rgb = v.to_rgb();
        assert_eq!(rgb.data, vec![3, 2, 1, 6, 5, 4, 9, 8, 7, 0, 0, 0]);
        assert_eq!(v.alpha().unwrap().data, vec![0, 1, 1, 0]);
        assert_eq!(Mask::from_view(&v).data, vec![1, 1, 1, 0]);
        let g = [0u8, 5, 7, 0];
        let gv = ImageView::new(&g, 2, 2, 2, PixelFormat::Gray8).unwrap();
        assert_eq!(gv.to_rgb().data, vec![0, 0, 0, 5, 5, 5, 7, 7, 7, 0, 0, 0]);
        assert!(gv.alpha().is_none());
        let m = Mask::from_view(&gv);
        assert_eq!(m.data, vec![0, 1, 1, 0]);
        assert_eq!(m.count(), 2);
        assert_eq!(m.bbox(), Some((0, 0, 2, 2)));
        let rv = rgb.view().unwrap();
        assert_eq!(rv.to_rgb(), rgb);
    }

    #[test]
    fn bbox_count_matches_a_plain_scan() {
        let mut r = crate::testing::xorshift(12345);
        for (w, h) in [(1u32, 1u32), (63, 5), (64, 3), (65, 7), (130, 9), (301, 4)] {
            for density in [0u64, 1, 20, 500] {
                let data: Vec<u8> = (0..w * h)
                    .map(|_| {
                        let s = r();
                        u8::from((s >> 33) % 1000 < density) * ((s >> 20) as u8 | 1)
                    })
                    .collect();
                let m = Mask {
                    width: w,
                    height: h,
                    data,
                };
                let (mut x0, mut y0, mut x1, mut y1, mut n) = (u32::MAX, u32::MAX, 0, 0, 0);
                for y in 0..h {
                    for x in 0..w {
                        if m.data[(y * w + x) as usize] != 0 {
                            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                            n += 1;
                        }
                    }
                }
                let want = (n > 0).then_some(((x0, y0, x1, y1), n));
                assert_eq!(m.bbox_count(), want, "{w}x{h} density {density}");
                assert_eq!(m.count(), n);
            }
        }
    }

    #[test]
    fn bbox_and_validation() {
        let mut m = Mask::zeros(5, 4).unwrap();
        assert!(m.is_empty());
        assert_eq!(m.bbox(), None);
        m.data[5 + 3] = 1;
        m.data[2 * 5 + 1] = 1;
        assert_eq!(m.bbox(), Some((1, 1, 4, 3)));
        assert_eq!(m.count(), 2);
        assert_eq!(m.bbox_count(), Some(((1, 1, 4, 3), 2)));
        let bad = Mask {
            width: 5,
            height: 4,
            data: vec![1; 7],
        };
        assert!(bad.validate().is_err());
        assert_eq!(bad.bbox(), Some((0, 0, 5, 1)));
        let bad_rgb = RgbImage {
            width: 2,
            height: 2,
            data: vec![0; 11],
        };
        assert!(bad_rgb.view().is_err());
    }
}
