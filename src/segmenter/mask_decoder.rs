//! SAM's mask decoder (`mask_decoder.*`): the two-way transformer between
//! the prompt tokens and the image embedding, the 4x transposed-convolution
//! upscaling, the per-mask hypernetwork MLPs and the IoU head.
//!
//! Token tensors are [width, count] (channels fastest); the image side is
//! [O, g*g] with positions row-major.

use super::tensors::SegmenterHparams;
use crate::error::Result;
use crate::sys::ggml::{Graph, MappedWeights, Tensor, Unary, Weight};
use crate::vision::siglip::{Act, LayerNorm, Linear, Mlp};
use crate::weights::layer_name;

/// `nn.LayerNorm`'s default epsilon (`layer_norm_final_attn`).
const FINAL_EPS: f32 = 1e-5;
/// `SamLayerNorm`'s default epsilon (`upscale_layer_norm`).
const UPSCALE_EPS: f32 = 1e-6;

/// `SamAttention`: projections to a (possibly narrower) inner width.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
}

impl Attention {
    fn load(w: &MappedWeights, p: &str, heads: u32) -> Result<Self> {
        let lin = |n: &str| Linear::load(w, &format!("{p}_{n}"));
        Ok(Attention {
            q: lin("q")?,
            k: lin("k")?,
            v: lin("v")?,
            out: lin("out")?,
            heads: i64::from(heads),
        })
    }

    /// `q_in` [O, Tq], `k_in` / `v_in` [O, Tk] -> [O, Tq].
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        q_in: Tensor<'g>,
        k_in: Tensor<'g>,
        v_in: Tensor<'g>,
    ) -> Result<Tensor<'g>> {
        let q = self.q.forward(g, q_in)?;
        let k = self.k.forward(g, k_in)?;
        let v = self.v.forward(g, v_in)?;
        let [inner, tq, _, _] = q.ne();
        let tk = k.ne()[1];
        let (h, d) = (self.heads, inner / self.heads);
        // [Di, T] -> [D, T, H]
        let split = |t: Tensor<'g>, n: i64| -> Result<Tensor<'g>> {
            let t = g.reshape(t, &[d, h, n])?;
            g.cont(g.permute(t, [0, 2, 1, 3])?)
        };
        let scores = g.mul_mat(split(k, tk)?, split(q, tq)?)?; // [Tk, Tq, H]
        let probs = g.soft_max_ext(scores, None, 1.0 / (d as f32).sqrt())?;
        let v = g.reshape(v, &[d, h, tk])?;
        let v = g.cont(g.permute(v, [1, 2, 0, 3])?)?; // [Tk, D, H]
        let o = g.mul_mat(v, probs)?; // [D, Tq, H]
        let o = g.cont(g.permute(o, [0, 2, 1, 3])?)?; // [D, H, Tq]
        let o = g.reshape(o, &[inner, tq])?;
        self.out.forward(g, o)
    }
}

/// `transformer.layers.N`.
struct TwoWayBlock {
    self_attn: Attention,
    ln1: LayerNorm,
    t2i: Attention,
    ln2: LayerNorm,
    mlp: Mlp,
    ln3: LayerNorm,
    i2t: Attention,
    ln4: LayerNorm,
    /// Layer 0 replaces the queries by their self-attention, without
    /// positions (`skip_first_layer_pe`).
    first: bool,
}

/// A `SamFeedForward`: ReLU between linear layers, none after the last.
struct FeedForward {
    layers: Vec<Linear>,
}

impl FeedForward {
    fn forward<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let mut x = x;
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(g, x)?;
            if i + 1 < self.layers.len() {
                x = g.unary(x, Unary::Relu)?;
            }
        }
        Ok(x)
    }
}

pub(crate) struct MaskDecoder {
    iou_token: Weight,
    mask_tokens: Weight,
    no_mask: Weight,
    blocks: Vec<TwoWayBlock>,
    final_attn: Attention,
    final_ln: LayerNorm,
    up1: (Weight, Weight),
    up_ln: LayerNorm,
    up2: (Weight, Weight),
    hyper: Vec<FeedForward>,
    iou: FeedForward,
    grid: i64,
}

/// The outputs of one decoder graph.
pub(crate) struct DecoderNodes<'g> {
    /// Every mask token's low-resolution logits, [(4g)^2, tokens].
    pub masks: Tensor<'g>,
    /// [tokens] predicted IoU.
    pub iou: Tensor<'g>,
}

impl MaskDecoder {
    pub fn load(w: &MappedWeights, hp: &SegmenterHparams) -> Result<Self> {
        let eps = hp.dec_eps;
        let blocks = (0..hp.dec_layers as usize)
            .map(|i| {
                let p = layer_name("dec.blk.{i}", i);
                let ln = |n: &str| LayerNorm::load(w, &format!("{p}.{n}"), eps);
                Ok(TwoWayBlock {
                    self_attn: Attention::load(w, &format!("{p}.self_attn"), hp.dec_heads)?,
                    ln1: ln("ln1")?,
                    t2i: Attention::load(w, &format!("{p}.t2i_attn"), hp.dec_heads)?,
                    ln2: ln("ln2")?,
                    mlp: Mlp::load(w, &p, Act::Relu)?,
                    ln3: ln("ln3")?,
                    i2t: Attention::load(w, &format!("{p}.i2t_attn"), hp.dec_heads)?,
                    ln4: ln("ln4")?,
                    first: i == 0,
                })
            })
            .collect::<Result<_>>()?;
        let hyper = (0..=hp.multimask as usize)
            .map(|m| {
                let p = layer_name("dec.hyper.{i}", m);
                let layers = ["fc_in", "fc_mid", "fc_out"]
                    .iter()
                    .map(|n| Linear::load(w, &format!("{p}.{n}")))
                    .collect::<Result<_>>()?;
                Ok(FeedForward { layers })
            })
            .collect::<Result<_>>()?;
        let mut iou = vec![Linear::load(w, "dec.iou.fc_in")?];
        for k in 0..hp.iou_depth as usize - 2 {
            iou.push(Linear::load(w, &layer_name("dec.iou.fc_mid.{i}", k))?);
        }
        iou.push(Linear::load(w, "dec.iou.fc_out")?);
        let pair = |n: &str| -> Result<(Weight, Weight)> {
            Ok((
                w.weight(&format!("{n}.weight"))?,
                w.weight(&format!("{n}.bias"))?,
            ))
        };
        Ok(MaskDecoder {
            iou_token: w.weight("dec.iou_token")?,
            mask_tokens: w.weight("dec.mask_tokens")?,
            no_mask: w.weight("prompt.no_mask")?,
            blocks,
            final_attn: Attention::load(w, "dec.final_attn", hp.dec_heads)?,
            final_ln: LayerNorm::load(w, "dec.final_ln", FINAL_EPS)?,
            up1: pair("dec.upscale1")?,
            up_ln: LayerNorm::load(w, "dec.upscale_ln", UPSCALE_EPS)?,
            up2: pair("dec.upscale2")?,
            hyper,
            iou: FeedForward { layers: iou },
            grid: i64::from(hp.grid()),
        })
    }

    /// `image` [O, g*g] (the encoder's embedding), `pe` [O, g*g] (its
    /// positional encoding), `sparse` [O, T] or `None` (no point or box).
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        image: Tensor<'g>,
        pe: Tensor<'g>,
        sparse: Option<Tensor<'g>>,
    ) -> Result<DecoderNodes<'g>> {
        g.set_scope("dec.");
        let out_tokens = g.concat(g.weight(self.iou_token)?, g.weight(self.mask_tokens)?, 1)?;
        let tokens = match sparse {
            Some(s) => g.concat(out_tokens, s, 1)?,
            None => out_tokens,
        };
        let o = tokens.ne()[0];
        let mut queries = tokens;
        let mut keys = g.add(image, g.weight(self.no_mask)?)?;
        for (i, b) in self.blocks.iter().enumerate() {
            g.set_scope(format!("dec.blk{i}."));
            (queries, keys) = b.forward(g, queries, keys, tokens, pe)?;
        }
        g.set_scope("dec.final.");
        let q = g.add(queries, tokens)?;
        let k = g.add(keys, pe)?;
        let a = self.final_attn.forward(g, q, k, keys)?;
        let queries = self.final_ln.forward(g, g.add(queries, a)?)?;

        g.set_scope("dec.upscale.");
        let up = self.upscale(g, keys, self.up1, self.grid)?;
        let up = self.up_ln.forward(g, up)?;
        let up = g.unary(up, Unary::GeluErf)?;
        let up = self.upscale(g, up, self.up2, 2 * self.grid)?;
        let up = g.unary(up, Unary::GeluErf)?; // [O/8, (4g)^2]

        g.set_scope("dec.heads.");
        let column = |j: usize| -> Result<Tensor<'g>> {
            g.view(
                queries,
                [o, 1, 1, 1],
                [4 * o as usize; 3],
                4 * o as usize * j,
            )
        };
        let mut hyper: Option<Tensor<'g>> = None;
        for (m, mlp) in self.hyper.iter().enumerate() {
            let h = mlp.forward(g, column(1 + m)?)?; // [O/8, 1]
            hyper = Some(match hyper {
                Some(acc) => g.concat(acc, h, 1)?,
                None => h,
            });
        }
        let hyper = hyper.ok_or_else(|| crate::Error::InvalidModel("no mask tokens".into()))?;
        let masks = g.mul_mat(up, hyper)?; // [(4g)^2, tokens]
        let iou = self.iou.forward(g, column(0)?)?;
        Ok(DecoderNodes { masks, iou })
    }

    /// A 2x2 stride-2 transposed convolution of `x` [IC, side*side] with
    /// the weight stored [IC, OC, dx, dy] (ggml order): one product gives
    /// every (oc, dx, dy), then the four outputs interleave.
    fn upscale<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'g>,
        (w, b): (Weight, Weight),
        side: i64,
    ) -> Result<Tensor<'g>> {
        let w = g.weight(w)?;
        let [ic, oc, _, _] = w.ne();
        let w = g.reshape(w, &[ic, oc * 4])?;
        let x = g.reshape(x, &[ic, side * side])?;
        let y = g.mul_mat(w, x)?; // [(oc dx dy), (x y)]
        let y = g.reshape(y, &[oc * 2, 2, side, side])?; // (oc dx), dy, x, y
        let y = g.cont(g.permute(y, [0, 2, 1, 3])?)?; // (oc dx), x, dy, y
        let y = g.reshape(y, &[oc, 4 * side * side])?;
        g.add(y, g.weight(b)?)
    }
}

impl TwoWayBlock {
    /// One block: (queries [O, T], keys [O, N]) -> (queries, keys).
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        queries: Tensor<'g>,
        keys: Tensor<'g>,
        tokens_pe: Tensor<'g>,
        pe: Tensor<'g>,
    ) -> Result<(Tensor<'g>, Tensor<'g>)> {
        let queries = if self.first {
            self.self_attn.forward(g, queries, queries, queries)?
        } else {
            let q = g.add(queries, tokens_pe)?;
            g.add(queries, self.self_attn.forward(g, q, q, queries)?)?
        };
        let queries = self.ln1.forward(g, queries)?;
        let q = g.add(queries, tokens_pe)?;
        let k = g.add(keys, pe)?;
        let queries = g.add(queries, self.t2i.forward(g, q, k, keys)?)?;
        let queries = self.ln2.forward(g, queries)?;
        let queries = g.add(queries, self.mlp.forward(g, queries)?)?;
        let queries = self.ln3.forward(g, queries)?;
        let q = g.add(queries, tokens_pe)?;
        let keys = g.add(keys, self.i2t.forward(g, k, q, queries)?)?;
        let keys = self.ln4.forward(g, keys)?;
        Ok((queries, keys))
    }
}
