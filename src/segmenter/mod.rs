//! Click to mask: SAM (ViT image encoder, prompt encoder, two-way mask
//! decoder) or MobileSAM (TinyViT image encoder, the same prompt encoder
//! and decoder) from a `dam-segmenter` GGUF file, on the same ggml graph layer
//! as the vision stage. Points and boxes in image pixels become three
//! candidate masks with predicted IoU; the best is upsampled to the image
//! size exactly as transformers' `SamProcessor.post_process_masks` does.
//!
//! The image embedding is cached per image, so a second prompt on the same
//! image runs only the decoder.

pub(crate) mod hparams;
pub(crate) mod image_encoder;
pub(crate) mod mask_decoder;
pub mod postprocess;
pub mod preprocess;
pub(crate) mod prompt_encoder;
pub mod regions;
pub mod tensors;
pub(crate) mod tiny_vit;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf_file::{GgufHeader, TensorInfo};
use crate::image::{ImageView, Mask, PixelFormat};
use crate::sys::ggml::{Backend, Graph, MappedWeights};
use crate::sys::{GgmlType, MappedFile};
use image_encoder::{rel_index, ImageEncoder};
use mask_decoder::MaskDecoder;
pub use preprocess::Preprocessed;
pub use prompt_encoder::PointLabel;
use prompt_encoder::PromptEncoder;
use tensors::EncoderHparams;
pub use tensors::{SegmenterHparams, SEGMENTER_ARCH};
use tiny_vit::{bias_index, TinyVit};

/// A click.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Image pixels (x right, y down).
    pub x: f32,
    pub y: f32,
    pub label: PointLabel,
}

/// What to segment: clicks, a box, or both.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub points: Vec<Point>,
    /// `[x0, y0, x1, y1]` in image pixels.
    pub bbox: Option<[f32; 4]>,
    /// Three candidate masks (SAM's multimask output, what the reference
    /// uses) instead of one.
    pub multimask: bool,
}

impl Prompt {
    /// Checks the prompt against a `width` x `height` image: at least one
    /// point or a box, every coordinate finite and inside the image, the box
    /// proper (x1 > x0, y1 > y0). Cheap: callers may check before encoding.
    pub fn check(&self, width: u32, height: u32) -> Result<()> {
        let (w, h) = (width as f32, height as f32);
        let inside = |x: f32, y: f32| {
            x.is_finite() && y.is_finite() && (0.0..=w).contains(&x) && (0.0..=h).contains(&y)
        };
        if self.points.is_empty() && self.bbox.is_none() {
            return Err(Error::InvalidArgument(
                "a prompt needs a point or a box".into(),
            ));
        }
        if let Some(p) = self.points.iter().find(|p| !inside(p.x, p.y)) {
            return Err(Error::InvalidArgument(format!(
                "point ({}, {}) is outside the {w}x{h} image",
                p.x, p.y
            )));
        }
        if let Some(b) = self.bbox {
            if !inside(b[0], b[1]) || !inside(b[2], b[3]) || b[2] <= b[0] || b[3] <= b[1] {
                return Err(Error::InvalidArgument(format!(
                    "box {b:?} is not a box inside the {w}x{h} image"
                )));
            }
        }
        Ok(())
    }
}

/// The decoder's result for one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmentation {
    /// Candidate masks' logits, each `low_res_side`^2 row-major.
    pub low_res: Vec<Vec<f32>>,
    pub low_res_side: u32,
    /// Predicted IoU of each candidate.
    pub iou: Vec<f32>,
    /// The candidate with the highest predicted IoU.
    pub best: usize,
    /// The best candidate at the image's size (1 = inside).
    pub mask: Mask,
}

/// The cached embedding of the last image.
struct Cached {
    key: ImageKey,
    pre: Preprocessed,
    /// [O, g*g] token layout (channels fastest).
    embedding: Vec<f32>,
}

/// The image encoder of a file.
enum Encoder {
    Vit(ImageEncoder),
    TinyVit(TinyVit),
}

/// A loaded segmenter: weights, a CPU backend and the last image's
/// embedding. One thread at a time (`&mut self`).
pub struct Segmenter {
    pub hp: SegmenterHparams,
    weights: MappedWeights,
    encoder: Encoder,
    prompt: PromptEncoder,
    decoder: MaskDecoder,
    /// The grid's positional encoding [O, g*g], fixed per model.
    dense_pe: Vec<f32>,
    backend: Backend,
    threads: usize,
    cache: Option<Cached>,
    /// Image encoder runs so far (the cache's effect is observable).
    encodes: u64,
}

impl Segmenter {
    /// Maps and validates a `dam-segmenter` GGUF file (every key, shape
    /// and type is checked before ggml sees a tensor); runs on the CPU with
    /// `threads` threads (0: all cores).
    pub fn load(path: &Path, threads: usize) -> Result<Segmenter> {
        let named = |e: Error| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", path.display())),
            e => e,
        };
        let map = Arc::new(MappedFile::open(path)?);
        let h = GgufHeader::parse(map.bytes(), &path.display().to_string())?;
        let hp = SegmenterHparams::from_gguf(&h).map_err(named)?;
        hp.check_tensors(&h).map_err(named)?;
        if let Some(t) = h.tensors.iter().find(|t| t.offset % 32 != 0) {
            return Err(named(Error::InvalidModel(format!(
                "tensor {} is not 32-byte aligned",
                t.name
            ))));
        }
        let infos: Vec<&TensorInfo> = h.tensors.iter().collect();
        let weights = MappedWeights::new(map, &infos, None, false)?;
        let encoder = match &hp.encoder {
            EncoderHparams::Vit(v) => ImageEncoder::load(&weights, &hp, v).map(Encoder::Vit),
            EncoderHparams::TinyVit(t) => TinyVit::load(&weights, &hp, t).map(Encoder::TinyVit),
        }
        .map_err(named)?;
        let prompt = PromptEncoder::load(&weights, hp.image_size, hp.grid()).map_err(named)?;
        if prompt.width() != hp.out as usize {
            return Err(named(Error::InvalidModel(
                "Fourier features do not match the decoder width".into(),
            )));
        }
        let decoder = MaskDecoder::load(&weights, &hp).map_err(named)?;
        let threads = crate::model::resolve_threads(threads)?;
        let backend = Backend::new(threads, Arc::new(AtomicBool::new(false)), None)?;
        Ok(Segmenter {
            dense_pe: prompt.dense_pe(),
            hp,
            weights,
            encoder,
            prompt,
            decoder,
            backend,
            threads,
            cache: None,
            encodes: 0,
        })
    }

    /// The processor's preprocessing of `image` (for this model's size).
    pub fn preprocess(&self, image: &ImageView<'_>) -> Result<Preprocessed> {
        let hp = &self.hp;
        preprocess::preprocess(
            image,
            hp.longest_edge,
            hp.pixel_scale,
            hp.image_mean,
            hp.image_std,
            self.threads,
        )
    }

    /// The image embedding of preprocessed pixels, [O, g*g] with channels
    /// fastest (`embedding_chw` gives PyTorch's [O, g, g]).
    pub fn encode(&mut self, pre: &Preprocessed) -> Result<Vec<f32>> {
        let s = self.hp.image_size as usize;
        if pre.side as usize != s || pre.pixels.len() != 3 * s * s {
            return Err(Error::InvalidArgument(format!(
                "pixels are not 3 x {s} x {s} (made for another model?)"
            )));
        }
        let g = Graph::new(&self.weights)?;
        let side = i64::from(self.hp.image_size);
        let px = g.input("enc.pixels", GgmlType::F32, &[side, side, 3, 1])?;
        // The encoder's index inputs, and how their values are made.
        let ((emb, index), values): (_, fn(i64) -> Vec<i32>) = match &self.encoder {
            Encoder::Vit(e) => (e.forward(&g, px)?, rel_index),
            Encoder::TinyVit(e) => (e.forward(&g, px)?, bias_index),
        };
        g.output(emb, "image_embeddings")?;
        self.backend.alloc(&g)?;
        self.backend.set_f32(&g, px, &pre.pixels)?;
        for (side, t) in index.inputs() {
            self.backend.set_i32(&g, t, &values(side))?;
        }
        self.backend.compute(&g)?;
        self.encodes += 1;
        self.backend.get_f32(&g, emb)
    }

    /// The cached image embedding ([O, g*g], channels fastest) of the last
    /// image segmented.
    pub fn cached_embedding(&self) -> Option<&[f32]> {
        self.cache.as_ref().map(|c| c.embedding.as_slice())
    }

    /// Drops the cached image embedding (the next `segment` encodes again).
    pub fn forget_image(&mut self) {
        self.cache = None;
    }

    /// How many times the image encoder has run (a second prompt on the
    /// cached image does not add one).
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// [O, g*g] token layout -> PyTorch's [O, g, g].
    pub fn embedding_chw(&self, tokens: &[f32]) -> Vec<f32> {
        let (o, n) = (self.hp.out as usize, self.hp.grid() as usize);
        let n2 = n * n;
        let mut out = vec![0f32; tokens.len()];
        for (p, row) in tokens.chunks_exact(o).enumerate().take(n2) {
            for (c, &v) in row.iter().enumerate() {
                out[c * n2 + p] = v;
            }
        }
        out
    }

    /// Runs the decoder on an image embedding: every mask token's
    /// low-resolution logits and predicted IoU (multimask or not chosen by
    /// the caller), after checking the prompt against the image size.
    pub fn decode(
        &mut self,
        embedding: &[f32],
        pre: &Preprocessed,
        prompt: &Prompt,
    ) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
        let sparse = self.sparse_tokens(pre, prompt)?;
        let (o, n) = (self.hp.out as i64, i64::from(self.hp.grid()));
        if embedding.len() != (o * n * n) as usize {
            return Err(Error::InvalidArgument("embedding of another model".into()));
        }
        let g = Graph::new(&self.weights)?;
        let f32t = GgmlType::F32;
        let image = g.input("dec.image", f32t, &[o, n * n])?;
        let pe = g.input("dec.pe", f32t, &[o, n * n])?;
        let t = (sparse.len() / o as usize) as i64;
        let sp = if t > 0 {
            Some(g.input("dec.sparse", f32t, &[o, t])?)
        } else {
            None
        };
        let nodes = self.decoder.forward(&g, image, pe, sp)?;
        g.output(nodes.masks, "masks")?;
        g.output(nodes.iou, "iou")?;
        self.backend.alloc(&g)?;
        self.backend.set_f32(&g, image, embedding)?;
        self.backend.set_f32(&g, pe, &self.dense_pe)?;
        if let Some(sp) = sp {
            self.backend.set_f32(&g, sp, &sparse)?;
        }
        self.backend.compute(&g)?;
        let masks = self.backend.get_f32(&g, nodes.masks)?;
        let iou = self.backend.get_f32(&g, nodes.iou)?;
        let plane = masks.len() / iou.len().max(1);
        let range = if prompt.multimask { 1..iou.len() } else { 0..1 };
        Ok((
            range
                .clone()
                .map(|m| masks[m * plane..(m + 1) * plane].to_vec())
                .collect(),
            iou[range].to_vec(),
        ))
    }

    /// Checks the prompt ([`Prompt::check`]) and encodes it into sparse
    /// tokens [O, T].
    fn sparse_tokens(&self, pre: &Preprocessed, prompt: &Prompt) -> Result<Vec<f32>> {
        prompt.check(pre.original.1, pre.original.0)?;
        let mut points = Vec::with_capacity(prompt.points.len());
        for p in &prompt.points {
            points.push((
                preprocess::map_point([p.x, p.y], pre.original, pre.resized)?,
                p.label,
            ));
        }
        let bbox = match prompt.bbox {
            None => None,
            Some(b) => {
                let p0 = preprocess::map_point([b[0], b[1]], pre.original, pre.resized)?;
                let p1 = preprocess::map_point([b[2], b[3]], pre.original, pre.resized)?;
                Some([p0[0], p0[1], p1[0], p1[1]])
            }
        };
        Ok(self.prompt.sparse(&points, bbox))
    }

    /// Segments `image` with `prompt`: the embedding comes from the cache
    /// when `image` is the last one seen (same size, format and bytes).
    pub fn segment(&mut self, image: &ImageView<'_>, prompt: &Prompt) -> Result<Segmentation> {
        if self.cache.as_ref().is_none_or(|c| !c.key.matches(image)) {
            self.cache = None;
            let key = ImageKey::of(image);
            let pre = self.preprocess(image)?;
            let embedding = self.encode(&pre)?;
            self.cache = Some(Cached {
                key,
                pre,
                embedding,
            });
        }
        let cached = self
            .cache
            .take()
            .ok_or_else(|| Error::Backend("no embedding".into()))?;
        let result = self.decode(&cached.embedding, &cached.pre, prompt);
        let pre = cached.pre.clone();
        self.cache = Some(cached);
        let (low_res, iou) = result?;
        let best = iou
            .iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > iou[b] { i } else { b });
        let low_res_side = 4 * self.hp.grid();
        let (oh, ow) = pre.original;
        let data = postprocess::upscale_mask(
            &low_res[best],
            low_res_side as usize,
            pre.side as usize,
            (pre.resized.0 as usize, pre.resized.1 as usize),
            (oh as usize, ow as usize),
        );
        Ok(Segmentation {
            mask: Mask::new(ow, oh, data)?,
            low_res,
            low_res_side,
            iou,
            best,
        })
    }
}

/// Identity of an image for the embedding cache: its size, format and a
/// copy of its pixel rows (compared exactly: a copy costs a few MB and
/// less time than hashing them).
struct ImageKey {
    size: (u32, u32),
    format: PixelFormat,
    pixels: Vec<u8>,
}

impl ImageKey {
    fn matches(&self, image: &ImageView<'_>) -> bool {
        if self.size != (image.width(), image.height()) || self.format != image.format() {
            return false;
        }
        let w = image.width() as usize * image.format().bytes_per_pixel();
        (0..image.height())
            .all(|y| image.row(y) == self.pixels.get(y as usize * w..(y as usize + 1) * w))
    }

    fn of(image: &ImageView<'_>) -> ImageKey {
        let mut pixels = Vec::new();
        for y in 0..image.height() {
            pixels.extend_from_slice(image.row(y).unwrap_or_default());
        }
        ImageKey {
            size: (image.width(), image.height()),
            format: image.format(),
            pixels,
        }
    }
}
