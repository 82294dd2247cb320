//! Regions: the ways a caller can say which part of the image to describe, and their
//! rasterisation into a binary [`Mask`] of the image's size.
//!
//! Pixel geometry: pixel `(i, j)` covers `[i, i+1) x [j, j+1)` and its centre is
//! `(i + 0.5, j + 0.5)`; coordinates are in pixels of the image, or, with
//! `normalized: true`, fractions of its width / height (`x * width`, `y * height`).

use crate::error::{Error, Result};
use crate::image::{ImageView, Mask};

/// A region of an image.
#[derive(Debug, Clone)]
pub enum Region<'a> {
    /// A mask image of the same size as the image. A pixel is in the region when its gray
    /// value, or any of its R, G, B values, is > 0 (alpha ignored; see [`Mask::from_view`]).
    Mask(ImageView<'a>),
    /// The image's own alpha channel (alpha > 0); the image must be `Rgba8` or `Bgra8`.
    AlphaOfImage,
    /// A filled rectangle: every pixel whose centre lies in `[x0, x1) x [y0, y1)`, i.e.
    /// columns `ceil(x0 - 0.5) .. ceil(x1 - 0.5)` (so integer corners `(10, 10, 20, 20)`
    /// give the 10 x 10 pixels 10..=19), clipped to the image.
    Box {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
        normalized: bool,
    },
    /// A brush stroke: the polyline through `points`, drawn with a round brush of
    /// diameter `width`: every pixel whose centre is within `width / 2` of the polyline.
    /// One point gives a dot. `width` is always in image pixels, also when `normalized`
    /// (which applies to the points only).
    Scribble {
        points: Vec<(f32, f32)>,
        width: f32,
        normalized: bool,
    },
    /// Positive / negative clicks `(x, y, positive)` in image pixels, turned into a mask
    /// by a segmenter (see [`crate::segmenter::regions`]; without one,
    /// [`Error::UnsupportedRegion`]).
    Points(Vec<(f32, f32, bool)>),
    /// The box `x0, y0, x1, y1` (image pixels) given to the segmenter, whose mask is
    /// the region (an opt-in alternative to the filled [`Region::Box`]).
    SegmentedBox { x0: f32, y0: f32, x1: f32, y1: f32 },
}

/// Rasterises `region` into a mask of `image`'s size.
///
/// Errors:
/// * `InvalidRegion`: a mask of another size; `AlphaOfImage` on an image without alpha;
///   a box with a non-finite or inverted coordinate; a scribble without points or with a
///   non-finite point; a region that covers no pixel of the image (empty, or outside).
/// * `InvalidArgument`: a scribble width that is not finite and > 0.
/// * `UnsupportedRegion`: points and segmented boxes (they need a segmenter:
///   [`crate::segmenter::regions::region_mask`]).
pub fn rasterize(region: &Region, image: &ImageView) -> Result<Mask> {
    let mask = rasterize_any(region, image)?;
    if mask.is_empty() {
        return Err(Error::InvalidRegion(EMPTY_REGION.into()));
    }
    Ok(mask)
}

/// What an empty region is told.
pub const EMPTY_REGION: &str = "region is empty (it covers no pixel of the image)";

/// As [`rasterize`], but an empty mask is a result, not an error (a video
/// drops such frames).
pub fn rasterize_any(region: &Region, image: &ImageView) -> Result<Mask> {
    let (w, h) = (image.width(), image.height());
    let mask = match region {
        Region::Points(_) | Region::SegmentedBox { .. } => {
            return Err(Error::UnsupportedRegion(
                crate::segmenter::regions::NEEDS_SEGMENTER.into(),
            ))
        }
        Region::Mask(view) => {
            if view.width() != w || view.height() != h {
                return Err(Error::InvalidRegion(format!(
                    "mask is {}x{} but the image is {w}x{h}",
                    view.width(),
                    view.height()
                )));
            }
            Mask::from_view(view)
        }
        Region::AlphaOfImage => image.alpha().ok_or_else(|| {
            Error::InvalidRegion(format!(
                "the image ({:?}) has no alpha channel to take the region from",
                image.format()
            ))
        })?,
        Region::Box {
            x0,
            y0,
            x1,
            y1,
            normalized,
        } => rasterize_box([*x0, *y0, *x1, *y1], *normalized, w, h)?,
        Region::Scribble {
            points,
            width,
            normalized,
        } => rasterize_scribble(points, *width, *normalized, w, h)?,
    };
    Ok(mask)
}

/// First pixel index whose centre is `>= c`, clipped to `[0, size]`.
fn first_centre_at_or_after(c: f64, size: u32) -> u32 {
    // ceil(c - 0.5), clamped before the cast so that any finite value is safe.
    (c - 0.5).ceil().clamp(0.0, f64::from(size)) as u32
}

fn rasterize_box(c: [f32; 4], normalized: bool, w: u32, h: u32) -> Result<Mask> {
    if c.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidRegion(format!(
            "box {c:?} has a non-finite coordinate"
        )));
    }
    let (sx, sy) = if normalized {
        (f64::from(w), f64::from(h))
    } else {
        (1.0, 1.0)
    };
    let [x0, y0, x1, y1] = [
        f64::from(c[0]) * sx,
        f64::from(c[1]) * sy,
        f64::from(c[2]) * sx,
        f64::from(c[3]) * sy,
    ];
    if x1 < x0 || y1 < y0 {
        return Err(Error::InvalidRegion(format!(
            "box {c:?} is inverted (x1 < x0 or y1 < y0)"
        )));
    }
    let (cx0, cx1) = (
        first_centre_at_or_after(x0, w),
        first_centre_at_or_after(x1, w),
    );
    let (cy0, cy1) = (
        first_centre_at_or_after(y0, h),
        first_centre_at_or_after(y1, h),
    );
    let mut mask = Mask::zeros(w, h)?;
    if cx0 < cx1 && cy0 < cy1 {
        for row in mask
            .data
            .chunks_exact_mut(w as usize)
            .skip(cy0 as usize)
            .take((cy1 - cy0) as usize)
        {
            row[cx0 as usize..cx1 as usize].fill(1);
        }
    }
    Ok(mask)
}

/// Squared distance from `p` to the segment `a`-`b`.
fn dist2_to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    qx * qx + qy * qy
}

fn rasterize_scribble(
    points: &[(f32, f32)],
    width: f32,
    normalized: bool,
    w: u32,
    h: u32,
) -> Result<Mask> {
    if !(width.is_finite() && width > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "scribble width {width} must be finite and > 0"
        )));
    }
    if points.is_empty() {
        return Err(Error::InvalidRegion("scribble has no points".into()));
    }
    if points.iter().any(|p| !(p.0.is_finite() && p.1.is_finite())) {
        return Err(Error::InvalidRegion(
            "scribble has a non-finite point".into(),
        ));
    }
    let (sx, sy) = if normalized {
        (f64::from(w), f64::from(h))
    } else {
        (1.0, 1.0)
    };
    let pts: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (f64::from(p.0) * sx, f64::from(p.1) * sy))
        .collect();
    let r = f64::from(width) / 2.0;
    let mut mask = Mask::zeros(w, h)?;
    let segments = pts
        .windows(2)
        .map(|s| (s[0], s[1]))
        .chain(std::iter::once((pts[0], pts[0])).filter(|_| pts.len() == 1));
    for (a, b) in segments {
        stamp_segment(&mut mask, a, b, r);
    }
    Ok(mask)
}

/// Sets every pixel whose centre is within `r` of the segment `a`-`b`.
///
/// Per row, the distance to the segment is convex along x, so the pixels inside form one
/// run around the column nearest to the segment; its ends are found by bisection with
/// the exact per-pixel test. Cost: O(rows x log(width)) plus the pixels set.
fn stamp_segment(mask: &mut Mask, a: (f64, f64), b: (f64, f64), r: f64) {
    let (w, h) = (mask.width, mask.height);
    let r2 = r * r;
    let cy0 = first_centre_at_or_after(a.1.min(b.1) - r, h);
    let cy1 = first_centre_at_or_after(a.1.max(b.1) + r + 1.0, h);
    for y in cy0..cy1 {
        let py = f64::from(y) + 0.5;
        let inside = |x: u32| dist2_to_segment((f64::from(x) + 0.5, py), a, b) <= r2;
        // x of the segment point nearest to this row (in y).
        let (lo_y, hi_y) = if a.1 <= b.1 { (a, b) } else { (b, a) };
        let xs = if py <= lo_y.1 {
            lo_y.0
        } else if py >= hi_y.1 {
            hi_y.0
        } else {
            lo_y.0 + (py - lo_y.1) / (hi_y.1 - lo_y.1) * (hi_y.0 - lo_y.0)
        };
        // The nearest pixel centres to xs: one of them is inside if any pixel is.
        let c0 = (xs - 0.5).floor().clamp(0.0, f64::from(w - 1)) as u32;
        let c1 = (c0 + 1).min(w - 1);
        let seed = if inside(c0) {
            c0
        } else if inside(c1) {
            c1
        } else {
            continue;
        };
        // First inside column: in (lo, seed]; last: in [seed, hi).
        let (mut lo, mut hi) = (0u32, seed);
        if inside(0) {
            hi = 0;
        } else {
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if inside(mid) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
        }
        let first = hi;
        let (mut lo, mut hi) = (seed, w);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if inside(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let last = lo;
        let row = y as usize * w as usize;
        mask.data[row + first as usize..=row + last as usize].fill(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::PixelFormat;

    fn gray(w: u32, h: u32) -> Vec<u8> {
        vec![0u8; (w * h) as usize]
    }

    fn boxed(x0: f32, y0: f32, x1: f32, y1: f32, normalized: bool) -> Region<'static> {
        Region::Box {
            x0,
            y0,
            x1,
            y1,
            normalized,
        }
    }

    fn set(m: &Mask) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for y in 0..m.height {
            for x in 0..m.width {
                if m.data[(y * m.width + x) as usize] != 0 {
                    v.push((x, y));
                }
            }
        }
        v
    }

    #[test]
    fn box_pixels() {
        let buf = gray(40, 30);
        let img = ImageView::new(&buf, 40, 30, 40, PixelFormat::Gray8).unwrap();
        let m = rasterize(&boxed(10.0, 5.0, 20.0, 8.0, false), &img).unwrap();
        assert_eq!(m.count(), 30);
        assert_eq!(m.bbox(), Some((10, 5, 20, 8)));
        // centres at i + 0.5: [10.5, 12.5) holds the centres of 10 and 11
        let m = rasterize(&boxed(10.5, 0.4, 12.5, 1.6, false), &img).unwrap();
        assert_eq!(m.bbox(), Some((10, 0, 12, 2)));
        // normalised
        let m = rasterize(&boxed(0.25, 0.0, 0.5, 1.0, true), &img).unwrap();
        assert_eq!(m.bbox(), Some((10, 0, 20, 30)));
        // clipped
        let m = rasterize(&boxed(-100.0, 25.0, 1e30, 1e9, false), &img).unwrap();
        assert_eq!(m.bbox(), Some((0, 25, 40, 30)));
    }

    #[test]
    fn box_errors() {
        let buf = gray(40, 30);
        let img = ImageView::new(&buf, 40, 30, 40, PixelFormat::Gray8).unwrap();
        for r in [
            boxed(20.0, 5.0, 10.0, 8.0, false),    // inverted
            boxed(10.0, 8.0, 20.0, 5.0, false),    // inverted
            boxed(f32::NAN, 0.0, 5.0, 5.0, false), // NaN
            boxed(0.0, 0.0, f32::INFINITY, 5.0, false),
            boxed(10.0, 5.0, 10.0, 8.0, false),   // zero width
            boxed(10.2, 5.0, 10.4, 8.0, false),   // no centre inside
            boxed(50.0, 5.0, 60.0, 8.0, false),   // outside
            boxed(-9.0, -9.0, -1.0, -1.0, false), // outside
        ] {
            assert!(
                matches!(rasterize(&r, &img), Err(Error::InvalidRegion(_))),
                "{r:?}"
            );
        }
    }

    #[test]
    fn scribble_dot_and_line() {
        let buf = gray(20, 20);
        let img = ImageView::new(&buf, 20, 20, 20, PixelFormat::Gray8).unwrap();
        // dot of diameter 1 centred on pixel (5, 6): just that pixel
        let dot = Region::Scribble {
            points: vec![(5.5, 6.5)],
            width: 1.0,
            normalized: false,
        };
        assert_eq!(set(&rasterize(&dot, &img).unwrap()), vec![(5, 6)]);
        // diameter 3: centres within 1.5 of (10.5, 10.5) form a 3x3 square
        let dot = Region::Scribble {
            points: vec![(10.5, 10.5)],
            width: 3.0,
            normalized: false,
        };
        assert_eq!(rasterize(&dot, &img).unwrap().count(), 9);
        // horizontal line from pixel 2 to pixel 12 on row 4, width 1
        let line = Region::Scribble {
            points: vec![(2.5, 4.5), (12.5, 4.5)],
            width: 1.0,
            normalized: false,
        };
        let m = rasterize(&line, &img).unwrap();
        assert_eq!(m.count(), 11);
        assert_eq!(m.bbox(), Some((2, 4, 13, 5)));
        // polyline (an L), normalised coordinates
        let l = Region::Scribble {
            points: vec![(0.125, 0.125), (0.125, 0.875), (0.875, 0.875)],
            width: 1.0,
            normalized: true,
        };
        let m = rasterize(&l, &img).unwrap();
        // (2.5, 2.5) -> (2.5, 17.5) -> (17.5, 17.5) in pixels: 16 + 16 - 1 pixels
        assert_eq!(m.count(), 31);
        assert_eq!(m.bbox(), Some((2, 2, 18, 18)));
    }

    /// The per-row bisection gives exactly the brute-force set of pixel centres.
    #[test]
    fn scribble_matches_brute_force() {
        let (w, h) = (53u32, 41u32);
        let buf = gray(w, h);
        let img = ImageView::new(&buf, w, h, w as usize, PixelFormat::Gray8).unwrap();
        let strokes: Vec<(Vec<(f32, f32)>, f32)> = vec![
            (vec![(10.3, 7.9)], 5.5),
            (vec![(-3.0, 20.0), (60.0, 22.5)], 2.0),
            (
                vec![(5.0, 5.0), (40.0, 35.0), (45.5, 2.25), (12.0, 30.0)],
                3.3,
            ),
            (vec![(26.0, -10.0), (26.0, 50.0)], 1.0),
            (vec![(0.0, 0.0), (52.9, 40.9)], 0.7),
            (vec![(30.0, 20.0), (30.2, 20.1), (29.9, 20.3)], 11.0),
            (vec![(-20.0, 10.0), (100.0, 35.0)], 8.0),
            (vec![(3.5, 3.5), (3.5, 3.5)], 1.0),
        ];
        for (points, width) in strokes {
            let region = Region::Scribble {
                points: points.clone(),
                width,
                normalized: false,
            };
            let got = rasterize(&region, &img).unwrap();
            let r2 = (f64::from(width) / 2.0).powi(2);
            let pts: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (f64::from(p.0), f64::from(p.1)))
                .collect();
            let segs: Vec<_> = if pts.len() == 1 {
                vec![(pts[0], pts[0])]
            } else {
                pts.windows(2).map(|s| (s[0], s[1])).collect()
            };
            for y in 0..h {
                for x in 0..w {
                    let c = (f64::from(x) + 0.5, f64::from(y) + 0.5);
                    let expect = segs.iter().any(|&(a, b)| dist2_to_segment(c, a, b) <= r2);
                    assert_eq!(
                        got.data[(y * w + x) as usize] != 0,
                        expect,
                        "{points:?} w {width} at ({x}, {y})"
                    );
                }
            }
        }
    }

    #[test]
    fn scribble_errors() {
        let buf = gray(20, 20);
        let img = ImageView::new(&buf, 20, 20, 20, PixelFormat::Gray8).unwrap();
        let mk = |points: Vec<(f32, f32)>, width: f32| Region::Scribble {
            points,
            width,
            normalized: false,
        };
        assert!(matches!(
            rasterize(&mk(vec![], 2.0), &img),
            Err(Error::InvalidRegion(_))
        ));
        for width in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                rasterize(&mk(vec![(1.0, 1.0)], width), &img),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(matches!(
            rasterize(&mk(vec![(1.0, f32::NAN)], 2.0), &img),
            Err(Error::InvalidRegion(_))
        ));
        // entirely outside the image
        assert!(matches!(
            rasterize(&mk(vec![(-50.0, -50.0), (-30.0, -60.0)], 4.0), &img),
            Err(Error::InvalidRegion(_))
        ));
        // huge coordinates and width do not overflow
        let m = rasterize(&mk(vec![(1e30, -1e30), (-1e30, 1e30)], 1e30), &img).unwrap();
        assert_eq!(m.count(), 400);
    }

    #[test]
    fn mask_alpha_points() {
        let rgba: Vec<u8> = (0..4 * 3 * 2)
            .map(|i| if i % 8 == 7 { 200 } else { 0 })
            .collect();
        let img = ImageView::new(&rgba, 3, 2, 12, PixelFormat::Rgba8).unwrap();
        let m = rasterize(&Region::AlphaOfImage, &img).unwrap();
        assert_eq!(m.data, vec![0, 1, 0, 1, 0, 1]);
        let rgb = vec![9u8; 18];
        let rgb_img = ImageView::new(&rgb, 3, 2, 9, PixelFormat::Rgb8).unwrap();
        assert!(matches!(
            rasterize(&Region::AlphaOfImage, &rgb_img),
            Err(Error::InvalidRegion(_))
        ));
        // mask region
        let mbuf = [0u8, 255, 0, 0, 0, 7];
        let mview = ImageView::new(&mbuf, 3, 2, 3, PixelFormat::Gray8).unwrap();
        let m = rasterize(&Region::Mask(mview), &img).unwrap();
        assert_eq!(m.data, vec![0, 1, 0, 0, 0, 1]);
        let small = ImageView::new(&mbuf, 2, 2, 3, PixelFormat::Gray8).unwrap();
        match rasterize(&Region::Mask(small), &img) {
            Err(Error::InvalidRegion(msg)) => assert!(msg.contains("2x2") && msg.contains("3x2")),
            other => panic!("{other:?}"),
        }
        let zero = [0u8; 6];
        let zview = ImageView::new(&zero, 3, 2, 3, PixelFormat::Gray8).unwrap();
        assert!(matches!(
            rasterize(&Region::Mask(zview), &img),
            Err(Error::InvalidRegion(_))
        ));
        assert!(matches!(
            rasterize(&Region::Points(vec![(1.0, 1.0, true)]), &img),
            Err(Error::UnsupportedRegion(_))
        ));
    }
}
