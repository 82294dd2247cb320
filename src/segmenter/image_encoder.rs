//! SAM's ViT image encoder (`vision_encoder.*`): patch embedding plus
//! absolute positions, layers with windowed or global attention and
//! decomposed relative positions, and the convolutional neck.
//!
//! Tokens are [C, W, H] (channels fastest, positions row-major), so
//! SAM's channels-first LayerNorm is ggml's row norm.

use std::collections::BTreeMap;

use super::tensors::{SegmenterHparams, VitHparams};
use crate::error::Result;
use crate::sys::ggml::{Graph, MappedWeights, Tensor, Weight};
use crate::vision::siglip::{Act, LayerNorm, Linear, Mlp};
use crate::weights::layer_name;

/// SAM's LayerNorm2d (the neck's) epsilon: `SamLayerNorm`'s default.
const NECK_EPS: f32 = 1e-6;

/// Self-attention with decomposed relative positions.
struct RelAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    rel_h: Weight,
    rel_w: Weight,
    heads: i64,
}

/// `vision_encoder.layers.N`.
struct EncoderLayer {
    ln1: LayerNorm,
    attn: RelAttention,
    ln2: LayerNorm,
    mlp: Mlp,
    /// Window side, or `None` for global attention.
    window: Option<i64>,
}

pub(crate) struct ImageEncoder {
    patch: Weight,
    patch_bias: Weight,
    pos: Weight,
    layers: Vec<EncoderLayer>,
    neck: Neck,
    grid: i64,
}

/// The neck SAM and MobileSAM share (`enc.neck.*`): 1x1 convolution,
/// LayerNorm2d, 3x3 convolution, LayerNorm2d.
pub(crate) struct Neck {
    conv1: Weight,
    ln1: LayerNorm,
    conv2: Weight,
    ln2: LayerNorm,
}

impl Neck {
    pub fn load(w: &MappedWeights) -> Result<Self> {
        Ok(Neck {
            conv1: w.weight("enc.neck.conv1.weight")?,
            ln1: LayerNorm::load(w, "enc.neck.ln1", NECK_EPS)?,
            conv2: w.weight("enc.neck.conv2.weight")?,
            ln2: LayerNorm::load(w, "enc.neck.ln2", NECK_EPS)?,
        })
    }

    /// `x` [C, grid, grid, 1] -> image embedding [O, grid*grid].
    pub fn forward<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>, grid: i64) -> Result<Tensor<'g>> {
        g.set_scope("enc.neck.");
        let c = x.ne()[0];
        let x = g.reshape(x, &[c, grid * grid])?;
        let y = g.mul_mat(g.weight(self.conv1)?, x)?; // [O, N]
        let y = self.ln1.forward(g, y)?;
        let o = y.ne()[0];
        // [O, W, H] -> [W, H, O] for the 3x3 convolution.
        let y = g.reshape(y, &[o, grid, grid, 1])?;
        let y = g.cont(g.permute(y, [2, 0, 1, 3])?)?;
        let y = g.conv2d(g.weight(self.conv2)?, y, 1, 1)?; // [O, N, 1]
        let y = g.reshape(y, &[o, grid * grid])?;
        self.ln2.forward(g, y)
    }
}

/// `h` [C, grid, grid, 1] zero-padded to whole windows of side `ws` ->
/// windows [C, ws*ws, nw*nw] (tokens and windows row-major, as torch's
/// `window_partition`), and the padded side.
pub(crate) fn partition<'g>(g: &'g Graph<'_>, h: Tensor<'g>, ws: i64) -> Result<(Tensor<'g>, i64)> {
    let [c, grid, ..] = h.ne();
    let padded = (grid + ws - 1) / ws * ws;
    let pad = (padded - grid) as i32;
    let h = g.pad(h, [0, pad, pad, 0])?;
    let (nw, s2) = (padded / ws, ws * ws);
    // [C*ws, nw, ws, nw] (c dw, wi, dh, hi) -> windows [C, ws*ws, nw*nw]
    let h = g.reshape(h, &[c * ws, nw, ws, nw])?;
    let h = g.cont(g.permute(h, [0, 2, 1, 3])?)?;
    Ok((g.reshape(h, &[c, s2, nw * nw])?, padded))
}

/// The inverse of [`partition`]: windows [C, ws*ws, nw*nw] of a `padded`
/// side -> [C, grid, grid, 1], the padding cropped.
pub(crate) fn unpartition<'g>(
    g: &'g Graph<'_>,
    h: Tensor<'g>,
    ws: i64,
    padded: i64,
    grid: i64,
) -> Result<Tensor<'g>> {
    let c = h.ne()[0];
    let nw = padded / ws;
    // (c dw, dh, wi, hi) -> (c dw, wi, dh, hi), then crop.
    let h = g.reshape(h, &[c * ws, ws, nw, nw])?;
    let h = g.cont(g.permute(h, [0, 2, 1, 3])?)?;
    let h = g.reshape(h, &[c, padded, padded, 1])?;
    let nb = [
        4 * c as usize,
        4 * (c * padded) as usize,
        4 * (c * padded * padded) as usize,
    ];
    g.cont(g.view(h, [c, grid, grid, 1], nb, 0)?)
}

/// Multi-head attention over B independent sets of N tokens: projections
/// `q`, `k`, `v` [C, N, B] -> [C, N, B] (heads concatenated).
/// `soft_max(q, scores, scale)` gives the probabilities from the unscaled
/// scores [Nk, Nq, H*B] (heads before sets, as torch's reshape), their
/// scale and the unscaled queries [D, N, H*B]: the softmax of the scaled
/// scores plus the model's position terms.
pub(crate) fn attend<'g>(
    g: &'g Graph<'_>,
    (q, k, v): (Tensor<'g>, Tensor<'g>, Tensor<'g>),
    heads: i64,
    soft_max: impl FnOnce(Tensor<'g>, Tensor<'g>, f32) -> Result<Tensor<'g>>,
) -> Result<Tensor<'g>> {
    let [c, n, b, _] = q.ne();
    let (h, d) = (heads, c / heads);
    let hb = h * b;
    // [C, N, B] -> [D, N, H*B].
    let heads_first = |t: Tensor<'g>| -> Result<Tensor<'g>> {
        let t = g.reshape(t, &[d, h, n, b])?;
        let t = g.cont(g.permute(t, [0, 2, 1, 3])?)?;
        g.reshape(t, &[d, n, hb])
    };
    let q = heads_first(q)?;
    let k = heads_first(k)?;
    let scores = g.mul_mat(k, q)?; // [Nk, Nq, H*B]
    let probs = soft_max(q, scores, 1.0 / (d as f32).sqrt())?;
    let v = g.reshape(v, &[d, h, n, b])?;
    let v = g.cont(g.permute(v, [1, 2, 0, 3])?)?; // [N, D, H, B]
    let v = g.reshape(v, &[n, d, hb])?;
    let o = g.mul_mat(v, probs)?; // [D, Nq, H*B]
    let o = g.reshape(o, &[d, n, h, b])?;
    let o = g.cont(g.permute(o, [0, 2, 1, 3])?)?; // [D, H, N, B]
    g.reshape(o, &[c, n, b])
}

/// The graph inputs of one encoder run besides the pixels: index tables
/// (relative positions, attention biases), one per attention side.
pub(crate) struct SideInputs<'g> {
    name: &'static str,
    by_side: BTreeMap<i64, Tensor<'g>>,
}

impl<'g> SideInputs<'g> {
    pub fn new(name: &'static str) -> Self {
        SideInputs {
            name,
            by_side: BTreeMap::new(),
        }
    }
    /// The input of `side` with `len` values, made on first use.
    pub fn get(&mut self, g: &'g Graph<'_>, side: i64, len: i64) -> Result<Tensor<'g>> {
        if let Some(&t) = self.by_side.get(&side) {
            return Ok(t);
        }
        let t = g.input_i32(&format!("{}{side}", self.name), len)?;
        self.by_side.insert(side, t);
        Ok(t)
    }
    /// Every (side, index input) to set.
    pub fn inputs(&self) -> impl Iterator<Item = (i64, Tensor<'g>)> + '_ {
        self.by_side.iter().map(|(&s, &t)| (s, t))
    }
}

/// The rows `q - k + s - 1` of a (2s-1)-row relative-position table for
/// every (q, k) of a side s.
pub fn rel_index(s: i64) -> Vec<i32> {
    (0..s)
        .flat_map(|q| (0..s).map(move |k| (q - k + s - 1) as i32))
        .collect()
}

impl ImageEncoder {
    pub fn load(w: &MappedWeights, hp: &SegmenterHparams, vit: &VitHparams) -> Result<Self> {
        let layers = (0..vit.layers as usize)
            .map(|i| {
                let p = layer_name("enc.blk.{i}", i);
                let lin = |n: &str| Linear::load(w, &format!("{p}.{n}"));
                Ok(EncoderLayer {
                    ln1: LayerNorm::load(w, &format!("{p}.ln1"), vit.eps)?,
                    attn: RelAttention {
                        q: lin("attn_q")?,
                        k: lin("attn_k")?,
                        v: lin("attn_v")?,
                        out: lin("attn_out")?,
                        rel_h: w.weight(&format!("{p}.rel_pos_h"))?,
                        rel_w: w.weight(&format!("{p}.rel_pos_w"))?,
                        heads: i64::from(vit.heads),
                    },
                    ln2: LayerNorm::load(w, &format!("{p}.ln2"), vit.eps)?,
                    mlp: Mlp::load(w, &p, Act::GeluErf)?,
                    window: (!vit.global_layers.contains(&(i as u32)))
                        .then_some(i64::from(vit.window)),
                })
            })
            .collect::<Result<_>>()?;
        Ok(ImageEncoder {
            patch: w.weight("enc.patch_embd.weight")?,
            patch_bias: w.weight("enc.patch_embd.bias")?,
            pos: w.weight("enc.pos_embd")?,
            layers,
            neck: Neck::load(w)?,
            grid: i64::from(hp.grid()),
        })
    }

    /// Pixels [S, S, 3, 1] -> image embedding [O, grid*grid] (row-major
    /// positions), with the index inputs the caller must set.
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        pixels: Tensor<'g>,
    ) -> Result<(Tensor<'g>, SideInputs<'g>)> {
        let gr = self.grid;
        g.set_scope("enc.");
        let x = g.patch_embed(g.weight(self.patch)?, pixels)?; // [C, N, 1]
        let x = g.add(x, g.weight(self.patch_bias)?)?;
        let c = x.ne()[0];
        let x = g.reshape(x, &[c, gr, gr, 1])?;
        let mut x = g.add(x, g.weight(self.pos)?)?;
        let mut index = SideInputs::new("enc.rel_idx");
        for (i, layer) in self.layers.iter().enumerate() {
            g.set_scope(format!("enc.blk{i}."));
            x = layer.forward(g, x, gr, &mut index)?;
        }
        Ok((self.neck.forward(g, x, gr)?, index))
    }
}

impl EncoderLayer {
    /// `x` [C, W, H, 1] -> [C, W, H, 1].
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'g>,
        grid: i64,
        index: &mut SideInputs<'g>,
    ) -> Result<Tensor<'g>> {
        let c = x.ne()[0];
        let h = self.ln1.forward(g, x)?;
        let h = match self.window {
            Some(ws) => {
                let (h, padded) = partition(g, h, ws)?;
                let h = self.attn.forward(g, h, ws, index)?;
                unpartition(g, h, ws, padded, grid)?
            }
            None => {
                let h = g.reshape(h, &[c, grid * grid, 1])?;
                let h = self.attn.forward(g, h, grid, index)?;
                g.reshape(h, &[c, grid, grid, 1])?
            }
        };
        let x = g.add(x, h)?;
        let h = self.ln2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        g.add(x, h)
    }
}

impl RelAttention {
    /// `x` [C, s*s, B] (B windows of side s) -> [C, s*s, B]. The scaled
    /// scores get `rel_h[q_h, k_h] + rel_w[q_w, k_w]` from the unscaled
    /// queries before the softmax, as `add_decomposed_rel_pos` does.
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'g>,
        s: i64,
        index: &mut SideInputs<'g>,
    ) -> Result<Tensor<'g>> {
        let idx = index.get(g, s, s * s)?;
        let qkv = (
            self.q.forward(g, x)?,
            self.k.forward(g, x)?,
            self.v.forward(g, x)?,
        );
        let o = attend(g, qkv, self.heads, |q, scores, scale| {
            let [d, _, hb, _] = q.ne();
            // Tables [D, k, q] of the relative embeddings for every (q, k).
            let table = |w: Weight| -> Result<Tensor<'g>> {
                let r = g.get_rows(g.weight(w)?, idx)?;
                g.reshape(r, &[d, s, s])
            };
            let rq = g.reshape(q, &[d, s, s, hb])?; // [D, w, h, HB]
            let rel_h = g.mul_mat(table(self.rel_h)?, rq)?; // [k_h, w, h, HB]
            let rq_t = g.cont(g.permute(rq, [0, 2, 1, 3])?)?; // [D, h, w, HB]
            let rel_w = g.mul_mat(table(self.rel_w)?, rq_t)?; // [k_w, h, w, HB]
            let rel_w = g.cont(g.permute(rel_w, [0, 2, 1, 3])?)?; // [k_w, w, h, HB]
            let n = s * s;
            let rel_h = g.reshape(rel_h, &[s, n, hb])?;
            let rel_w = g.reshape(rel_w, &[s, n, hb])?;
            g.rel_soft_max(scores, rel_h, rel_w, scale)
        })?;
        self.out.forward(g, o)
    }
}
