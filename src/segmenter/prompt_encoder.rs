//! SAM's prompt encoder (`prompt_encoder.*`, `shared_image_embedding`):
//! random Fourier features of points, box corners and the embedding grid,
//! plus the learned point-type embeddings. A handful of tokens: computed
//! on the CPU, in `SamPositionalEmbedding`'s precision (coordinates in
//! f64 until the cast to f32 before the projection).

use crate::error::{Error, Result};
use crate::sys::ggml::MappedWeights;

/// A point's role, as SAM's labels: 1 foreground, 0 background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointLabel {
    Background,
    Foreground,
}

/// The learned vectors of the prompt encoder, copied out of the file once.
#[derive(Clone, Debug)]
pub(crate) struct PromptEncoder {
    /// [2, F] row-major (`positional_embedding`).
    gaussian: Vec<f32>,
    feats: usize,
    /// `point_embed.{0..3}`: background, foreground, box top-left, bottom-right.
    point: [Vec<f32>; 4],
    not_a_point: Vec<f32>,
    /// Encoder input side (points are normalised by it).
    side: f64,
    grid: usize,
}

impl PromptEncoder {
    pub fn load(w: &MappedWeights, side: u32, grid: u32) -> Result<Self> {
        let gaussian = w.read_f32("prompt.pe_gaussian")?;
        let feats = gaussian.len() / 2;
        let read = |n: &str| w.read_f32(n);
        let point = [
            read("prompt.point_embd.0")?,
            read("prompt.point_embd.1")?,
            read("prompt.point_embd.2")?,
            read("prompt.point_embd.3")?,
        ];
        let not_a_point = read("prompt.not_a_point")?;
        if point
            .iter()
            .chain([&not_a_point])
            .any(|p| p.len() != 2 * feats)
        {
            return Err(Error::InvalidModel(
                "prompt embeddings differ from the Fourier feature width".into(),
            ));
        }
        Ok(PromptEncoder {
            gaussian,
            feats,
            point,
            not_a_point,
            side: f64::from(side),
            grid: grid as usize,
        })
    }

    /// Width of every embedding (2F).
    pub fn width(&self) -> usize {
        2 * self.feats
    }

    /// `SamPositionalEmbedding.forward` of one coordinate pair in [0, 1]:
    /// [sin(2 pi c G), cos(2 pi c G)].
    fn fourier(&self, x: f64, y: f64, out: &mut Vec<f32>) {
        let (cx, cy) = ((2.0 * x - 1.0) as f32, (2.0 * y - 1.0) as f32);
        let f = self.feats;
        let proj: Vec<f32> = (0..f)
            .map(|j| {
                let p = cx * self.gaussian[j] + cy * self.gaussian[f + j];
                2.0 * std::f32::consts::PI * p
            })
            .collect();
        out.extend(proj.iter().map(|p| p.sin()));
        out.extend(proj.iter().map(|p| p.cos()));
    }

    /// Sparse tokens [T, 2F] row-major: the points (plus the padding
    /// "not a point" when there is no box) then the box corners.
    /// Coordinates are in the resized frame (see `preprocess::map_point`).
    pub fn sparse(&self, points: &[([f64; 2], PointLabel)], bbox: Option<[f64; 4]>) -> Vec<f32> {
        let mut out = Vec::new();
        let emit = |x: f64, y: f64, add: &[f32], out: &mut Vec<f32>| {
            let start = out.len();
            self.fourier((x + 0.5) / self.side, (y + 0.5) / self.side, out);
            for (o, a) in out[start..].iter_mut().zip(add) {
                *o += a;
            }
        };
        for &(p, label) in points {
            let add = match label {
                PointLabel::Background => &self.point[0],
                PointLabel::Foreground => &self.point[1],
            };
            emit(p[0], p[1], add, &mut out);
        }
        if bbox.is_none() && !points.is_empty() {
            out.extend_from_slice(&self.not_a_point);
        }
        if let Some(b) = bbox {
            emit(b[0], b[1], &self.point[2], &mut out);
            emit(b[2], b[3], &self.point[3], &mut out);
        }
        out
    }

    /// The positional encoding of the embedding grid, [2F, g*g] in token
    /// layout (channels fastest, positions row-major).
    pub fn dense_pe(&self) -> Vec<f32> {
        let g = self.grid;
        let mut out = Vec::with_capacity(g * g * self.width());
        for y in 0..g {
            for x in 0..g {
                // (cumsum - 0.5) / size, in f32 as torch computes it.
                let fx = (x as f32 + 0.5) / g as f32;
                let fy = (y as f32 + 0.5) / g as f32;
                self.fourier(f64::from(fx), f64::from(fy), &mut out);
            }
        }
        out
    }
}
