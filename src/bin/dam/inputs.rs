//! The image and region flags of `describe` (and `dump`'s image + mask),
//! loaded into frames.

use std::path::{Path, PathBuf};

use clap::Args;
use dam::image::{load_mask, load_rgb, Mask, RgbImage};
use dam::segmenter::regions::click_labels;
use dam::{Error, Frame, PixelFormat, Region, Result};

#[derive(Args)]
pub struct RegionArgs {
    /// Input image (png/jpeg); repeat with --mask for a video.
    #[arg(long, short = 'i', required = true)]
    pub image: Vec<PathBuf>,
    /// Mask image of the same size (pixel > 0 = region); one per --image.
    #[arg(long)]
    pub mask: Vec<PathBuf>,
    /// A box x0,y0,x1,y1 (pixels, or fractions with --normalized).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", allow_hyphen_values = true)]
    pub bbox: Option<String>,
    /// A scribble: points x,y;x,y;... drawn with --brush pixels.
    #[arg(long, value_name = "X,Y;X,Y;...", allow_hyphen_values = true)]
    pub scribble: Option<String>,
    /// Brush diameter of --scribble, pixels.
    #[arg(long, default_value_t = 10.0)]
    pub brush: f32,
    /// Clicks x,y;x,y in pixels, made a mask by --segmenter.
    #[arg(long, value_name = "X,Y;...")]
    pub points: Option<String>,
    /// One label per click: 1 = positive (the default), 0 = negative.
    #[arg(long, value_name = "L,L,...", requires = "points")]
    pub labels: Option<String>,
    /// The --box goes to --segmenter, whose mask is the region (pixels).
    #[arg(long, requires = "bbox")]
    pub segment_box: bool,
    /// Take the mask from the image's alpha channel (alpha > 0).
    #[arg(long)]
    pub alpha_mask: bool,
    /// --box / --scribble coordinates are fractions of width/height.
    #[arg(long)]
    pub normalized: bool,
}

impl RegionArgs {
    /// Images with one mask each (`dump`'s inputs).
    pub fn masks(image: Vec<PathBuf>, mask: Vec<PathBuf>) -> RegionArgs {
        RegionArgs {
            image,
            mask,
            bbox: None,
            scribble: None,
            brush: 0.0,
            points: None,
            labels: None,
            segment_box: false,
            alpha_mask: false,
            normalized: false,
        }
    }
}

/// Loaded inputs: images (RGBA kept when the alpha channel is the mask) and
/// one region source per frame.
pub struct Inputs {
    images: Vec<(Vec<u8>, u32, u32, PixelFormat)>,
    masks: Vec<Option<Mask>>,
    /// The region of every frame, unless it comes from `masks`.
    region: Option<Region<'static>>,
}

fn floats(s: &str, what: &str) -> Result<Vec<f32>> {
    s.split([',', ';', ' '])
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.trim()
                .parse::<f32>()
                .map_err(|_| Error::InvalidArgument(format!("{what}: '{t}' is not a number")))
        })
        .collect()
}

/// `--points` with `--labels` (all positive without): (x, y, positive).
pub fn clicks(points: &str, labels: Option<&str>) -> Result<Vec<Click>> {
    let xy = pairs(points, "--points")?;
    let labels = labels
        .map(|l| {
            l.split([',', ';', ' '])
                .filter(|t| !t.is_empty())
                .map(|t| match t.trim() {
                    "1" => Ok(1),
                    "0" => Ok(0),
                    _ => Err(Error::InvalidArgument(format!(
                        "--labels: '{t}' is not 0 or 1"
                    ))),
                })
                .collect::<Result<Vec<i64>>>()
        })
        .transpose()?;
    let positive = click_labels(labels.as_deref(), xy.len(), "--labels")?;
    Ok(xy
        .into_iter()
        .zip(positive)
        .map(|((x, y), p)| (x, y, p))
        .collect())
}

/// A click: x, y in pixels and whether it is positive.
pub type Click = (f32, f32, bool);

/// A segmenter prompt's `--points`/`--labels` and `--box` (each optional):
/// the clicks (none without `--points`) and the box.
pub fn clicks_and_box(
    points: Option<&str>,
    labels: Option<&str>,
    bbox: Option<&str>,
) -> Result<(Vec<Click>, Option<[f32; 4]>)> {
    let clicks = points
        .map(|p| clicks(p, labels))
        .transpose()?
        .unwrap_or_default();
    Ok((clicks, bbox.map(box_corners).transpose()?))
}

/// `--box x0,y0,x1,y1`.
pub fn box_corners(b: &str) -> Result<[f32; 4]> {
    let v = floats(b, "--box")?;
    v.try_into()
        .map_err(|_| Error::InvalidArgument("--box: expected x0,y0,x1,y1".into()))
}

fn pairs(s: &str, what: &str) -> Result<Vec<(f32, f32)>> {
    let v = floats(s, what)?;
    if v.is_empty() || v.len() % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "{what}: expected x,y pairs"
        )));
    }
    Ok(v.chunks(2).map(|c| (c[0], c[1])).collect())
}

pub fn load_inputs(r: &RegionArgs) -> Result<Inputs> {
    check_region_flags(r)?;
    let images = r
        .image
        .iter()
        .map(|p| load_image(p, r.alpha_mask))
        .collect::<Result<Vec<_>>>()?;
    let masks = if r.mask.is_empty() {
        vec![None; images.len()]
    } else {
        r.mask
            .iter()
            .map(|p| load_mask(p).map(Some))
            .collect::<Result<_>>()?
    };
    Ok(Inputs {
        images,
        masks,
        region: parse_region(r)?,
    })
}

/// Exactly one kind of region, and one mask per image.
fn check_region_flags(r: &RegionArgs) -> Result<()> {
    let kinds = [
        !r.mask.is_empty(),
        r.bbox.is_some(),
        r.scribble.is_some(),
        r.points.is_some(),
        r.alpha_mask,
    ];
    if kinds.iter().filter(|&&k| k).count() != 1 {
        return Err(Error::InvalidArgument(
            "give exactly one region: --mask, --box, --scribble, --points or --alpha-mask".into(),
        ));
    }
    if !r.mask.is_empty() && r.mask.len() != r.image.len() {
        return Err(Error::InvalidArgument(format!(
            "{} images but {} masks",
            r.image.len(),
            r.mask.len()
        )));
    }
    Ok(())
}

/// One image: RGBA when its alpha channel is the mask, RGB otherwise.
fn load_image(p: &Path, alpha_mask: bool) -> Result<(Vec<u8>, u32, u32, PixelFormat)> {
    if alpha_mask {
        let img = image::open(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
        if !img.color().has_alpha() {
            return Err(Error::InvalidRegion(format!(
                "{}: --alpha-mask needs an image with alpha",
                p.display()
            )));
        }
        let rgba = img.to_rgba8();
        let (w, h) = rgba.dimensions();
        Ok((rgba.into_raw(), w, h, PixelFormat::Rgba8))
    } else {
        let RgbImage {
            width,
            height,
            data,
        } = load_rgb(p)?;
        Ok((data, width, height, PixelFormat::Rgb8))
    }
}

/// The region every frame shares (none with --mask).
fn parse_region(r: &RegionArgs) -> Result<Option<Region<'static>>> {
    Ok(if let Some(b) = &r.bbox {
        let [x0, y0, x1, y1] = box_corners(b)?;
        if r.segment_box && r.normalized {
            return Err(Error::InvalidArgument(
                "--segment-box takes pixels, not --normalized".into(),
            ));
        }
        Some(if r.segment_box {
            Region::SegmentedBox { x0, y0, x1, y1 }
        } else {
            Region::Box {
                x0,
                y0,
                x1,
                y1,
                normalized: r.normalized,
            }
        })
    } else if let Some(s) = &r.scribble {
        Some(Region::Scribble {
            points: pairs(s, "--scribble")?,
            width: r.brush,
            normalized: r.normalized,
        })
    } else if let Some(p) = &r.points {
        Some(Region::Points(clicks(p, r.labels.as_deref())?))
    } else if r.alpha_mask {
        Some(Region::AlphaOfImage)
    } else {
        None
    })
}

impl Inputs {
    pub fn frames(&self) -> Result<Vec<Frame<'_>>> {
        self.images
            .iter()
            .zip(&self.masks)
            .map(|((data, w, h, fmt), mask)| {
                let image =
                    dam::ImageView::new(data, *w, *h, *w as usize * fmt.bytes_per_pixel(), *fmt)?;
                let region = match (mask, &self.region) {
                    (Some(m), _) => Region::Mask(m.view()?),
                    (None, Some(r)) => r.clone(),
                    (None, None) => return Err(Error::InvalidArgument("no region given".into())),
                };
                Ok(Frame { image, region })
            })
            .collect()
    }
}
