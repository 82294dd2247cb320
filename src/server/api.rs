//! The request side of the API: the reference's chat-completion JSON and
//! dam's extension fields, parsed and checked into a [`Parsed`] request
//! (decoded images, regions, options) or an OpenAI-style error.

use std::io::Cursor;

use axum::http::StatusCode;
use base64::Engine as _;
use serde::Deserialize;

use crate::image::{ImageView, PixelFormat, MAX_IMAGE_SIDE};
use crate::region::{rasterize, Region};
use crate::segmenter::regions::click_labels;
use crate::{DescribeOptions, Error, LengthControl};

/// An error answer: `{"error": {"message", "type", "code"}}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub code: &'static str,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code,
        }
    }

    /// The answer to an engine error: the caller's fault (400) or ours (500).
    pub fn engine(e: &Error) -> Self {
        match e {
            Error::InvalidArgument(_) | Error::ContextOverflow(_) => {
                Self::bad("invalid_parameter", e.to_string())
            }
            Error::InvalidRegion(_) | Error::UnsupportedRegion(_) => {
                Self::bad("invalid_region", e.to_string())
            }
            Error::Cancelled => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the request was cancelled (the server is shutting down)".into(),
                kind: "server_error",
                code: "cancelled",
            },
            _ => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
                kind: "server_error",
                code: "engine_error",
            },
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": self.message, "type": self.kind, "code": self.code,
        }})
    }
}

/// What parsing needs to know about the server.
pub struct ParseCtx {
    /// Names a request's `model` may have.
    pub model_names: Vec<String>,
    /// Frames per request: 1 for an image model, more for a video model.
    pub max_frames: usize,
    /// The most pixels one decoded image may have (decompression bombs).
    pub max_pixels: u64,
    /// The most regions one request may ask for.
    pub max_regions: usize,
    /// `--allow-remote-images`: how http:// image URLs are fetched; None
    /// refuses them.
    pub remote: Option<super::fetch::FetchLimits>,
    /// Whether a segmenter is loaded (`--segmenter`): clicks and segmented
    /// boxes are refused without one.
    pub segmenter: bool,
}

/// A decoded image, RGB or RGBA.
pub struct OwnedImage {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

impl OwnedImage {
    pub fn view(&self) -> crate::Result<ImageView<'_>> {
        let stride = self.width as usize * self.format.bytes_per_pixel();
        ImageView::new(&self.data, self.width, self.height, stride, self.format)
    }
}

/// A region of a request, owning its data.
pub enum OwnedRegion {
    Alpha,
    Mask(OwnedImage),
    Box([f32; 4], bool),
    Scribble(Vec<(f32, f32)>, f32, bool),
    /// Clicks `(x, y, positive)`, pixels (the segmenter's mask).
    Points(Vec<(f32, f32, bool)>),
    /// A box given to the segmenter, pixels.
    SegmentedBox([f32; 4]),
}

impl OwnedRegion {
    pub fn region(&self) -> crate::Result<Region<'_>> {
        Ok(match self {
            OwnedRegion::Alpha => Region::AlphaOfImage,
            OwnedRegion::Mask(m) => Region::Mask(m.view()?),
            &OwnedRegion::Box([x0, y0, x1, y1], normalized) => Region::Box {
                x0,
                y0,
                x1,
                y1,
                normalized,
            },
            OwnedRegion::Scribble(p, w, n) => Region::Scribble {
                points: p.clone(),
                width: *w,
                normalized: *n,
            },
            OwnedRegion::Points(p) => Region::Points(p.clone()),
            &OwnedRegion::SegmentedBox([x0, y0, x1, y1]) => Region::SegmentedBox { x0, y0, x1, y1 },
        })
    }
}

/// How streamed pieces are spelt (see the README's "Server" section).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    /// `delta.content` is a list `[{"type": "text", "text": piece}]`, as
    /// the reference's dam_server.py sends.
    Reference,
    /// `delta.content` is a string, as OpenAI's API sends.
    Openai,
}

/// A checked request, ready for the engine.
pub struct Parsed {
    /// One image, or the frames of a video.
    pub images: Vec<OwnedImage>,
    /// One or more regions of one image; for a video, one per frame.
    pub regions: Vec<OwnedRegion>,
    pub opts: DescribeOptions,
    pub stream: bool,
    /// The request's `model`, echoed in the answer.
    pub model: String,
    pub compat: Option<Compat>,
}

impl Parsed {
    pub fn is_video(&self) -> bool {
        self.images.len() > 1
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    seed: Option<i64>,
    // dam's extensions.
    #[serde(default)]
    ignore_eos: bool,
    length: Option<LengthControl>,
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    scribble: Option<Vec<[f32; 2]>>,
    brush: Option<f32>,
    points: Option<Vec<[f32; 2]>>,
    labels: Option<Vec<i64>>,
    #[serde(default)]
    segment_box: bool,
    #[serde(default)]
    normalized: bool,
    regions: Option<Vec<RegionSpec>>,
    compat: Option<Compat>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Items(Vec<Item>),
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    image_url: Option<Url>,
    mask_url: Option<Url>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Url {
    Object { url: String },
    Plain(String),
}

impl Url {
    fn as_str(&self) -> &str {
        match self {
            Url::Object { url } | Url::Plain(url) => url,
        }
    }
}

/// One entry of the `regions` extension: exactly one of its fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionSpec {
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    scribble: Option<Vec<[f32; 2]>>,
    brush: Option<f32>,
    points: Option<Vec<[f32; 2]>>,
    labels: Option<Vec<i64>>,
    #[serde(default)]
    segment_box: bool,
    mask: Option<String>,
    #[serde(default)]
    alpha: bool,
}

/// The default brush diameter of scribbles, pixels (as `dam describe`).
const BRUSH: f32 = 10.0;

/// Parses and checks one request body (CPU work: run it off the reactor).
pub fn parse(body: &[u8], ctx: &ParseCtx) -> Result<Parsed, ApiError> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad("invalid_request", e.to_string()),
        _ => ApiError::bad("invalid_json", format!("the body is not valid JSON: {e}")),
    })?;
    if !ctx.model_names.contains(&req.model) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{}` does not exist; this server serves {}",
                req.model,
                ctx.model_names.join(" or ")
            ),
            kind: "invalid_request_error",
            code: "model_not_found",
        });
    }
    let (text, image_urls, mask_urls) = user_content(&req.messages);
    let images = image_urls
        .iter()
        .map(|u| decode_url(u, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    check_image_count(images.len(), ctx.max_frames)?;
    let opts = options(&req, &text)?;
    let regions = regions(&req, &mask_urls, &images, ctx)?;
    Ok(Parsed {
        images,
        regions,
        opts,
        stream: req.stream,
        model: req.model,
        compat: req.compat,
    })
}

/// The text of the last user message (as the reference) and the image and
/// mask URLs of all user messages.
fn user_content(messages: &[Message]) -> (String, Vec<&str>, Vec<&str>) {
    let (mut text, mut images, mut masks) = (String::new(), Vec::new(), Vec::new());
    for m in messages.iter().filter(|m| m.role == "user") {
        text.clear();
        match &m.content {
            Some(Content::Text(t)) => text.push_str(t),
            Some(Content::Items(items)) => {
                for it in items {
                    match (it.kind.as_str(), &it.text, &it.image_url, &it.mask_url) {
                        ("text", Some(t), _, _) => text.push_str(t),
                        ("image_url", _, Some(u), _) => images.push(u.as_str()),
                        ("mask_url", _, _, Some(u)) => masks.push(u.as_str()),
                        _ => {}
                    }
                }
            }
            None => {}
        }
    }
    (text, images, masks)
}

fn check_image_count(n: usize, max_frames: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad(
            "no_image",
            "no image: send one {\"type\": \"image_url\", \"image_url\": {\"url\": \"data:image/png;base64,...\"}} item",
        ));
    }
    if n > max_frames {
        let what = if max_frames == 1 {
            "this is an image model: one image per request".to_string()
        } else {
            format!("this video model takes at most {max_frames} frames")
        };
        return Err(ApiError::bad(
            "too_many_images",
            format!("{n} images given; {what}"),
        ));
    }
    Ok(())
}

/// The question without the reference's leading `<image>`, `Image:` or
/// `Video:` markers (the engine places the images); empty = the model's.
fn query_of(text: &str) -> Option<String> {
    let mut q = text.trim_start();
    loop {
        let before = q.len();
        for p in ["<image>", "Image:", "Video:"] {
            q = q.strip_prefix(p).unwrap_or(q).trim_start();
        }
        if q.len() == before {
            break;
        }
    }
    let q = q.trim_end();
    (!q.is_empty()).then(|| q.to_string())
}

/// The generation options: the reference's defaults, then the request's.
fn options(req: &ChatRequest, text: &str) -> Result<DescribeOptions, ApiError> {
    let mut o = DescribeOptions {
        query: query_of(text),
        length: req.length,
        ..Default::default()
    };
    if let Some(n) = req.max_completion_tokens.or(req.max_tokens) {
        o.max_new_tokens = usize::try_from(n)
            .ok()
            .filter(|&n| (1..=1 << 20).contains(&n))
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_parameter",
                    format!("max_tokens {n}: must be at least 1"),
                )
            })?;
    }
    o.temperature = req.temperature.unwrap_or(o.temperature);
    o.top_p = req.top_p.unwrap_or(o.top_p);
    o.top_k = req.top_k.unwrap_or(o.top_k);
    o.ignore_eos = req.ignore_eos;
    if let Some(s) = req.seed {
        // OpenAI's seed is any integer; the engine's is 32 bits.
        o.seed = s as u32;
    }
    let in_range = o.temperature.is_finite() && o.temperature >= 0.0;
    if !(in_range && o.top_p > 0.0 && o.top_p <= 1.0) {
        return Err(ApiError::bad(
            "invalid_parameter",
            format!(
                "temperature {} / top_p {} out of range (0 <= temperature, 0 < top_p <= 1)",
                o.temperature, o.top_p
            ),
        ));
    }
    if o.query.as_deref().is_some_and(|q| q.contains("<image>")) {
        return Err(ApiError::bad(
            "invalid_parameter",
            "<image> may only lead the text: the server places the image",
        ));
    }
    Ok(o)
}

/// The request's regions: the `regions` list, a `mask_url` item, the
/// top-level region fields (`box`, `scribble`, `points`: one region, read as
/// a `regions` entry), or else the image's alpha (the reference's way).
fn regions(
    req: &ChatRequest,
    masks: &[&str],
    images: &[OwnedImage],
    ctx: &ParseCtx,
) -> Result<Vec<OwnedRegion>, ApiError> {
    let top = RegionSpec {
        bbox: req.bbox,
        scribble: req.scribble.clone(),
        brush: req.brush,
        points: req.points.clone(),
        labels: req.labels.clone(),
        segment_box: req.segment_box,
        mask: None,
        alpha: false,
    };
    let fields = top.bbox.is_some() || top.scribble.is_some() || top.points.is_some();
    let loose = top.labels.is_some() || top.segment_box;
    let given = [req.regions.is_some(), fields || loose, !masks.is_empty()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(ApiError::bad(
            "invalid_region",
            "give one of regions, box, scribble, points or mask_url items",
        ));
    }
    let n = req.normalized;
    let list = if let Some(specs) = &req.regions {
        if specs.is_empty() || specs.len() > ctx.max_regions {
            return Err(ApiError::bad(
                "invalid_region",
                format!(
                    "{} regions given; 1..={} per request",
                    specs.len(),
                    ctx.max_regions
                ),
            ));
        }
        specs
            .iter()
            .enumerate()
            .map(|(k, s)| region_spec(s, n, ctx).map_err(|e| prefix(e, k)))
            .collect::<Result<Vec<_>, _>>()?
    } else if !masks.is_empty() {
        masks
            .iter()
            .map(|u| decode_url(u, ctx).map(OwnedRegion::Mask))
            .collect::<Result<Vec<_>, _>>()?
    } else if fields || loose {
        vec![region_spec(&top, n, ctx)?]
    } else {
        vec![OwnedRegion::Alpha]
    };
    check_regions(&list, images)?;
    Ok(list)
}

fn region_spec(s: &RegionSpec, n: bool, ctx: &ParseCtx) -> Result<OwnedRegion, ApiError> {
    if (s.labels.is_some() && s.points.is_none()) || (s.segment_box && s.bbox.is_none()) {
        return Err(ApiError::bad(
            "invalid_region",
            "labels go with points, segment_box with a box",
        ));
    }
    let segmented = s.points.is_some() || s.segment_box;
    if segmented && !ctx.segmenter {
        return Err(ApiError::bad(
            "no_segmenter",
            "points and segment_box need a segmenter: start the server with --segmenter S.gguf \
             (a dam-segmenter GGUF: `dam convert` of a SAM or MobileSAM checkpoint)",
        ));
    }
    if segmented && n {
        return Err(ApiError::bad(
            "invalid_region",
            "points and segmented boxes are in pixels: drop \"normalized\"",
        ));
    }
    match (&s.bbox, &s.scribble, &s.points, &s.mask, s.alpha) {
        (Some(b), None, None, None, false) if s.segment_box => Ok(OwnedRegion::SegmentedBox(*b)),
        (Some(b), None, None, None, false) => Ok(OwnedRegion::Box(*b, n)),
        (None, Some(p), None, None, false) => Ok(OwnedRegion::Scribble(
            p.iter().map(|p| (p[0], p[1])).collect(),
            s.brush.unwrap_or(BRUSH),
            n,
        )),
        (None, None, Some(p), None, false) => clicks(p, s.labels.as_deref()),
        (None, None, None, Some(u), false) => decode_url(u, ctx).map(OwnedRegion::Mask),
        (None, None, None, None, true) => Ok(OwnedRegion::Alpha),
        _ => Err(ApiError::bad(
            "invalid_region",
            "a region is exactly one of {\"box\": [x0,y0,x1,y1]} (+ \"segment_box\": true), {\"scribble\": [[x,y],...]}, {\"points\": [[x,y],...]} (+ \"labels\": [1,0,...]), {\"mask\": \"data:...\"}, {\"alpha\": true}",
        )),
    }
}

/// Clicks with their labels (1 positive, 0 negative; default all
/// positive). Where they fall is checked against the image later.
fn clicks(points: &[[f32; 2]], labels: Option<&[i64]>) -> Result<OwnedRegion, ApiError> {
    let bad = |m: String| ApiError::bad("invalid_region", m);
    if points.is_empty() {
        return Err(bad("points is empty: give at least one [x, y] click".into()));
    }
    let positive = click_labels(labels, points.len(), "labels").map_err(|e| match e {
        Error::InvalidArgument(m) => bad(m),
        e => bad(e.to_string()),
    })?;
    Ok(OwnedRegion::Points(
        points
            .iter()
            .zip(positive)
            .map(|(p, l)| (p[0], p[1], l))
            .collect(),
    ))
}

fn prefix(mut e: ApiError, k: usize) -> ApiError {
    e.message = format!("region {k}: {}", e.message);
    e
}

/// Rasterises each region now (a segmenter's prompt is checked against the
/// image instead), so that a bad one is a 400 before it reaches (and fails)
/// a batch. A video's frames are checked by the engine, which drops frames
/// whose region is empty; their segmenter prompts are checked here.
fn check_regions(list: &[OwnedRegion], images: &[OwnedImage]) -> Result<(), ApiError> {
    let numbered = |e: ApiError, k: usize| if list.len() > 1 { prefix(e, k) } else { e };
    if images.len() > 1 {
        if list.len() != 1 && list.len() != images.len() {
            return Err(ApiError::bad(
                "invalid_region",
                format!(
                    "{} regions for {} frames: give one, or one per frame",
                    list.len(),
                    images.len()
                ),
            ));
        }
        if matches!(list[0], OwnedRegion::Alpha)
            && images.iter().any(|i| i.format != PixelFormat::Rgba8)
        {
            return Err(no_alpha());
        }
        for (k, img) in images.iter().enumerate() {
            let r = list.get(k).unwrap_or(&list[0]);
            check_prompt(r, img).map_err(|e| numbered(e, k))?;
        }
        return Ok(());
    }
    let img = &images[0];
    let view = img
        .view()
        .map_err(|e| ApiError::bad("invalid_image", e.to_string()))?;
    for (k, r) in list.iter().enumerate() {
        if matches!(r, OwnedRegion::Alpha) && img.format != PixelFormat::Rgba8 {
            return Err(no_alpha());
        }
        if check_prompt(r, img).map_err(|e| numbered(e, k))? {
            continue;
        }
        let region = r
            .region()
            .map_err(|e| ApiError::bad("invalid_region", e.to_string()))?;
        rasterize(&region, &view).map_err(|e| {
            let code = match (&e, r) {
                (Error::InvalidRegion(m), OwnedRegion::Alpha)
                    if m == crate::region::EMPTY_REGION =>
                {
                    "empty_alpha"
                }
                _ => "invalid_region",
            };
            numbered(ApiError::bad(code, e.to_string()), k)
        })?;
    }
    Ok(())
}

/// Checks a segmenter region's prompt against `img` (the segmenter's own
/// check, before its encoder runs); false for a region without a prompt.
fn check_prompt(r: &OwnedRegion, img: &OwnedImage) -> Result<bool, ApiError> {
    let bad = |e: Error| ApiError::bad("invalid_region", e.to_string());
    let region = r.region().map_err(bad)?;
    let Some(prompt) = crate::segmenter::regions::prompt_of(&region) else {
        return Ok(false);
    };
    prompt.check(img.width, img.height).map_err(bad)?;
    Ok(true)
}

fn no_alpha() -> ApiError {
    ApiError::bad(
        "no_alpha",
        "the image has no alpha channel: the region is where an RGBA image's alpha > 0 \
         (the reference answers `assert image.mode == \"RGBA\"`); send an RGBA PNG, or give a box, scribble or mask",
    )
}

/// Decodes a `data:image/...;base64,` URL. Remote URLs are refused (the
/// server does not fetch what a request names: SSRF) unless the server runs
/// with `--allow-remote-images`.
pub fn decode_url(url: &str, ctx: &ParseCtx) -> Result<OwnedImage, ApiError> {
    let max_pixels = ctx.max_pixels;
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let Some(limits) = ctx.remote else {
            return Err(ApiError::bad(
                "remote_url_refused",
                "remote image URLs are refused (the server does not fetch URLs unless started with --allow-remote-images); send the image inline as data:image/png;base64,...",
            ));
        };
        return decode_image(&super::fetch::fetch_blocking(url, limits)?, max_pixels);
    }
    let rest = url.strip_prefix("data:").ok_or_else(|| {
        ApiError::bad(
            "invalid_image_url",
            "the image URL must be a data: URL (data:image/png;base64,...)",
        )
    })?;
    let (meta, payload) = rest
        .split_once(',')
        .filter(|(m, _)| m.ends_with(";base64"))
        .ok_or_else(|| {
            ApiError::bad(
                "invalid_image_url",
                "the data: URL must be base64 (data:image/png;base64,...)",
            )
        })?;
    if !meta.starts_with("image/") {
        return Err(ApiError::bad(
            "invalid_image_url",
            format!("data:{meta}: not an image type"),
        ));
    }
    let clean: Vec<u8> = payload
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&clean)
        .map_err(|e| {
            ApiError::bad(
                "invalid_base64",
                format!("the image's base64 does not decode: {e}"),
            )
        })?;
    decode_image(&bytes, max_pixels)
}

/// Decodes PNG or JPEG bytes, checking the declared size before decoding
/// (a small file may declare a huge image).
fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<OwnedImage, ApiError> {
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ApiError::bad("invalid_image", e.to_string()))
    };
    let not_image = || ApiError::bad("invalid_image", "the data is not a PNG or JPEG image");
    let r = reader()?;
    if r.format().is_none() {
        return Err(not_image());
    }
    let (w, h) = r.into_dimensions().map_err(|_| not_image())?;
    let side = MAX_IMAGE_SIDE;
    if w == 0 || h == 0 || w > side || h > side || u64::from(w) * u64::from(h) > max_pixels {
        return Err(ApiError::bad(
            "image_too_large",
            format!("the image is {w}x{h}; at most {side} pixels a side and {max_pixels} pixels"),
        ));
    }
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(max_pixels.saturating_mul(16));
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| ApiError::bad("invalid_image", format!("the image does not decode: {e}")))?;
    let (data, format) = if img.color().has_alpha() {
        (img.to_rgba8().into_raw(), PixelFormat::Rgba8)
    } else {
        (img.to_rgb8().into_raw(), PixelFormat::Rgb8)
    };
    Ok(OwnedImage {
        data,
        width: img.width(),
        height: img.height(),
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strips_the_reference_markers() {
        assert_eq!(
            query_of("<image>\nDescribe it."),
            Some("Describe it.".into())
        );
        assert_eq!(
            query_of("Video: <image><image>\nWhat?"),
            Some("What?".into())
        );
        assert_eq!(query_of(" Image: "), None);
    }

    #[test]
    fn a_declared_bomb_is_refused_before_decoding() {
        // An 8-byte signature and an IHDR declaring 100000 x 100000.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(100_000u32.to_be_bytes());
        png.extend(100_000u32.to_be_bytes());
        png.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
        let e = decode_image(&png, 1 << 24).err().map(|e| e.code);
        assert!(
            matches!(e, Some("image_too_large") | Some("invalid_image")),
            "{e:?}"
        );
    }
}
