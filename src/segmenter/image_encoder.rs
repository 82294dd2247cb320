//! SAM's ViT image encoder (`vision_encoder.*`): patch embedding plus
//! absolute positions, layers with windowed or global attention and
//! decomposed relative positions, and the convolutional neck.
//!
//! Tokens are [C, W, H] (channels fastest, positions row-major), so
//! SAM's channels-first LayerNorm is ggml's row norm.

use std::collections::BTreeMap;

use super::tensors::SegmenterHparams;
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
    neck_conv1: Weight,
    neck_ln1: LayerNorm,
    neck_conv2: Weight,
    neck_ln2: LayerNorm,
    grid: i64,
    side: i64,
}

/// The graph inputs of one encoder run besides the pixels: the relative
/// position row indices, one table per attention side.
pub(crate) struct RelIndex<'g> {
    by_side: BTreeMap<i64, Tensor<'g>>,
}

impl<'g> RelIndex<'g> {
    /// The rows `q - k + s - 1` of a (2s-1)-row table for every (q, k).
    pub fn values(s: i64) -> Vec<i32> {
        (0..s)
            .flat_map(|q| (0..s).map(move |k| (q - k + s - 1) as i32))
            .collect()
    }
    /// Every (side, index input) to set.
    pub fn inputs(&self) -> impl Iterator<Item = (i64, Tensor<'g>)> + '_ {
        self.by_side.iter().map(|(&s, &t)| (s, t))
    }
}

impl ImageEncoder {
    pub fn load(w: &MappedWeights, hp: &SegmenterHparams) -> Result<Self> {
        let layers = (0..hp.layers as usize)
            .map(|i| {
                let p = layer_name("enc.blk.{i}", i);
                let lin = |n: &str| Linear::load(w, &format!("{p}.{n}"));
                Ok(EncoderLayer {
                    ln1: LayerNorm::load(w, &format!("{p}.ln1"), hp.eps)?,
                    attn: RelAttention {
                        q: lin("attn_q")?,
                        k: lin("attn_k")?,
                        v: lin("attn_v")?,
                        out: lin("attn_out")?,
                        rel_h: w.weight(&format!("{p}.rel_pos_h"))?,
                        rel_w: w.weight(&format!("{p}.rel_pos_w"))?,
                        heads: i64::from(hp.heads),
                    },
                    ln2: LayerNorm::load(w, &format!("{p}.ln2"), hp.eps)?,
                    mlp: Mlp::load(w, &p, Act::GeluErf)?,
                    window: (!hp.is_global(i)).then_some(i64::from(hp.window)),
                })
            })
            .collect::<Result<_>>()?;
        Ok(ImageEncoder {
            patch: w.weight("enc.patch_embd.weight")?,
            patch_bias: w.weight("enc.patch_embd.bias")?,
            pos: w.weight("enc.pos_embd")?,
            layers,
            neck_conv1: w.weight("enc.neck.conv1.weight")?,
            neck_ln1: LayerNorm::load(w, "enc.neck.ln1", NECK_EPS)?,
            neck_conv2: w.weight("enc.neck.conv2.weight")?,
            neck_ln2: LayerNorm::load(w, "enc.neck.ln2", NECK_EPS)?,
            grid: i64::from(hp.grid()),
            side: i64::from(hp.image_size),
        })
    }

    /// The pixel input [S, S, 3, 1] of a graph.
    pub fn input<'g>(&self, g: &'g Graph<'_>) -> Result<Tensor<'g>> {
        g.input(
            "enc.pixels",
            crate::sys::GgmlType::F32,
            &[self.side, self.side, 3, 1],
        )
    }

    /// Pixels [S, S, 3, 1] -> image embedding [O, grid*grid] (row-major
    /// positions), with the index inputs the caller must set.
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        pixels: Tensor<'g>,
    ) -> Result<(Tensor<'g>, RelIndex<'g>)> {
        let gr = self.grid;
        g.set_scope("enc.");
        let x = g.patch_embed(g.weight(self.patch)?, pixels)?; // [C, N, 1]
        let x = g.add(x, g.weight(self.patch_bias)?)?;
        let c = x.ne()[0];
        let x = g.reshape(x, &[c, gr, gr, 1])?;
        let mut x = g.add(x, g.weight(self.pos)?)?;
        let mut index = RelIndex {
            by_side: BTreeMap::new(),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            g.set_scope(format!("enc.blk{i}."));
            x = layer.forward(g, x, gr, &mut index)?;
        }
        g.set_scope("enc.neck.");
        let x = g.reshape(x, &[c, gr * gr])?;
        let y = g.mul_mat(g.weight(self.neck_conv1)?, x)?; // [O, N]
        let y = self.neck_ln1.forward(g, y)?;
        let o = y.ne()[0];
        // [O, W, H] -> [W, H, O] for the 3x3 convolution.
        let y = g.reshape(y, &[o, gr, gr, 1])?;
        let y = g.cont(g.permute(y, [2, 0, 1, 3])?)?;
        let y = g.conv2d(g.weight(self.neck_conv2)?, y, 1, 1)?; // [O, N, 1]
        let y = g.reshape(y, &[o, gr * gr])?;
        Ok((self.neck_ln2.forward(g, y)?, index))
    }
}

impl EncoderLayer {
    /// `x` [C, W, H, 1] -> [C, W, H, 1].
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'g>,
        grid: i64,
        index: &mut RelIndex<'g>,
    ) -> Result<Tensor<'g>> {
        let c = x.ne()[0];
        let h = self.ln1.forward(g, x)?;
        let h = match self.window {
            Some(ws) => {
                let padded = (grid + ws - 1) / ws * ws;
                let pad = (padded - grid) as i32;
                let h = g.pad(h, [0, pad, pad, 0])?;
                let (nw, s2) = (padded / ws, ws * ws);
                // [C*ws, nw, ws, nw] (c dw, wi, dh, hi) -> windows [C, ws*ws, nw*nw]
                let h = g.reshape(h, &[c * ws, nw, ws, nw])?;
                let h = g.cont(g.permute(h, [0, 2, 1, 3])?)?;
                let h = g.reshape(h, &[c, s2, nw * nw])?;
                let h = self.attn.forward(g, h, ws, index)?;
                // Back: (c dw, dh, wi, hi) -> (c dw, wi, dh, hi), then crop.
                let h = g.reshape(h, &[c * ws, ws, nw, nw])?;
                let h = g.cont(g.permute(h, [0, 2, 1, 3])?)?;
                let h = g.reshape(h, &[c, padded, padded, 1])?;
                let nb = [
                    4 * c as usize,
                    4 * (c * padded) as usize,
                    4 * (c * padded * padded) as usize,
                ];
                g.cont(g.view(h, [c, grid, grid, 1], nb, 0)?)?
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
    /// `x` [C, s*s, B] (B windows of side s) -> [C, s*s, B]. Scores get
    /// `rel_h[q_h, k_h] + rel_w[q_w, k_w]` from the unscaled queries
    /// before the softmax, as `add_decomposed_rel_pos` does.
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'g>,
        s: i64,
        index: &mut RelIndex<'g>,
    ) -> Result<Tensor<'g>> {
        let [c, n, b, _] = x.ne();
        let (h, d) = (self.heads, c / self.heads);
        let hb = h * b;
        // [C, N, B] -> [D, N, H*B] (heads before windows, as torch's reshape).
        let heads_first = |t: Tensor<'g>| -> Result<Tensor<'g>> {
            let t = g.reshape(t, &[d, h, n, b])?;
            let t = g.cont(g.permute(t, [0, 2, 1, 3])?)?;
            g.reshape(t, &[d, n, hb])
        };
        let q = heads_first(self.q.forward(g, x)?)?;
        let k = heads_first(self.k.forward(g, x)?)?;
        let scores = g.mul_mat(k, q)?; // [Nk, Nq, H*B]
        let scores = g.scale_bias(scores, 1.0 / (d as f32).sqrt(), 0.0)?;

        let idx = match index.by_side.get(&s) {
            Some(&t) => t,
            None => {
                let t = g.input_i32(&format!("enc.rel_idx{s}"), s * s)?;
                index.by_side.insert(s, t);
                t
            }
        };
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
        let scores = g.reshape(scores, &[s, s, n, hb])?; // [k_w, k_h, Nq, HB]
        let scores = g.add(scores, g.reshape(rel_h, &[1, s, n, hb])?)?;
        let scores = g.add(scores, g.reshape(rel_w, &[s, 1, n, hb])?)?;
        let scores = g.reshape(scores, &[n, n, hb])?;
        let probs = g.soft_max_ext(scores, None, 1.0)?;

        let v = self.v.forward(g, x)?;
        let v = g.reshape(v, &[d, h, n, b])?;
        let v = g.cont(g.permute(v, [1, 2, 0, 3])?)?; // [N, D, H, B]
        let v = g.reshape(v, &[n, d, hb])?;
        let o = g.mul_mat(v, probs)?; // [D, Nq, H*B]
        let o = g.reshape(o, &[d, n, h, b])?;
        let o = g.cont(g.permute(o, [0, 2, 1, 3])?)?; // [D, H, N, B]
        let o = g.reshape(o, &[c, n, b])?;
        self.out.forward(g, o)
    }
}
