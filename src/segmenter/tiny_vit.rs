//! MobileSAM's TinyViT image encoder (`enc.*` of a `tiny_vit` file): a
//! two-convolution patch embedding (stride 4), an MBConv stage, patch
//! mergings, stages of TinyViT blocks (windowed attention with attention
//! biases, a depthwise local convolution, an MLP), and SAM's neck.
//!
//! Tokens are [C, W, H] (channels fastest, positions row-major) as in the
//! ViT encoder; the converter folded every BatchNorm into its convolution.

use super::image_encoder::{attend, partition, unpartition, Neck, SideInputs};
use super::tensors::{SegmenterHparams, TinyVitHparams};
use crate::error::Result;
use crate::sys::ggml::{Graph, MappedWeights, Tensor, Weight};
use crate::vision::siglip::{Act, LayerNorm, Linear, Mlp};
use crate::weights::layer_name;

const GELU: Act = Act::GeluErf;

/// A convolution with the folded BatchNorm's bias: full (an F32 kernel
/// [K, K, IC, OC]) or depthwise ([K, K, 1, C]).
struct ConvBn {
    weight: Weight,
    bias: Weight,
}

impl ConvBn {
    fn load(w: &MappedWeights, prefix: &str) -> Result<Self> {
        Ok(ConvBn {
            weight: w.weight(&format!("{prefix}.weight"))?,
            bias: w.weight(&format!("{prefix}.bias"))?,
        })
    }

    /// Depthwise: `x` [C, W, H, 1] -> [C, OW, OH, 1].
    fn depthwise<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>, stride: i32) -> Result<Tensor<'g>> {
        let pad = (g.weight(self.weight)?.ne()[0] / 2) as i32;
        let y = g.conv2d_dw(g.weight(self.weight)?, x, stride, pad)?;
        g.add(y, g.weight(self.bias)?)
    }
}

/// `MBConv`: expand (1x1), depthwise 3x3, project (1x1), residual.
struct MbConv {
    conv1: Linear,
    conv2: ConvBn,
    conv3: Linear,
}

/// `PatchMerging`: 1x1, depthwise 3x3 with the stride, 1x1.
struct Merging {
    conv1: Linear,
    conv2: ConvBn,
    conv3: Linear,
    stride: i32,
}

/// `TinyViTBlock`.
struct Block {
    attn_norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    bias: Weight,
    out: Linear,
    local: ConvBn,
    ffn_norm: LayerNorm,
    mlp: Mlp,
    heads: i64,
    window: i64,
}

/// One attention stage: its merging (from the previous stage) and blocks.
struct Stage {
    merge: Merging,
    blocks: Vec<Block>,
}

pub(crate) struct TinyVit {
    patch1: ConvBn,
    patch2: ConvBn,
    conv_blocks: Vec<MbConv>,
    stages: Vec<Stage>,
    neck: Neck,
    grid: i64,
}

/// The attention-bias rows for every (query, key) of a window of side s
/// (row-major): `|dy| * s + |dx|`, the order in which TinyViT's
/// `Attention` numbers the offsets.
pub fn bias_index(s: i64) -> Vec<i32> {
    let n = s * s;
    (0..n)
        .flat_map(|q| {
            (0..n).map(move |k| {
                let (dy, dx) = ((q / s - k / s).abs(), (q % s - k % s).abs());
                (dy * s + dx) as i32
            })
        })
        .collect()
}

impl TinyVit {
    pub fn load(w: &MappedWeights, hp: &SegmenterHparams, tv: &TinyVitHparams) -> Result<Self> {
        let conv_blocks = (0..tv.depths[0] as usize)
            .map(|i| {
                let p = layer_name("enc.conv.{i}", i);
                Ok(MbConv {
                    conv1: Linear::load(w, &format!("{p}.conv1"))?,
                    conv2: ConvBn::load(w, &format!("{p}.conv2"))?,
                    conv3: Linear::load(w, &format!("{p}.conv3"))?,
                })
            })
            .collect::<Result<_>>()?;
        let mut stages = Vec::new();
        let mut first = 0;
        for s in 1..tv.widths.len() {
            let p = layer_name("enc.merge.{i}", s - 1);
            let merge = Merging {
                conv1: Linear::load(w, &format!("{p}.conv1"))?,
                conv2: ConvBn::load(w, &format!("{p}.conv2"))?,
                conv3: Linear::load(w, &format!("{p}.conv3"))?,
                stride: tv.merge_stride(s - 1) as i32,
            };
            let depth = tv.depths[s] as usize;
            let blocks = (first..first + depth)
                .map(|i| Block::load(w, i, tv, s))
                .collect::<Result<_>>()?;
            first += depth;
            stages.push(Stage { merge, blocks });
        }
        Ok(TinyVit {
            patch1: ConvBn::load(w, "enc.patch.conv1")?,
            patch2: ConvBn::load(w, "enc.patch.conv2")?,
            conv_blocks,
            stages,
            neck: Neck::load(w)?,
            grid: i64::from(hp.grid()),
        })
    }

    /// Pixels [S, S, 3, 1] -> image embedding [O, grid*grid], with the
    /// index inputs the caller must set.
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        pixels: Tensor<'g>,
    ) -> Result<(Tensor<'g>, SideInputs<'g>)> {
        g.set_scope("enc.patch.");
        let side = pixels.ne()[0];
        let y = g.conv2d(g.weight(self.patch1.weight)?, pixels, 2, 1)?; // [C/2, N, 1]
        let y = GELU.forward(g, g.add(y, g.weight(self.patch1.bias)?)?)?;
        let (c, r) = (y.ne()[0], (side + 1) / 2);
        let y = g.reshape(y, &[c, r, r, 1])?;
        let y = g.cont(g.permute(y, [2, 0, 1, 3])?)?; // [W, H, C/2, 1]
        let y = g.conv2d(g.weight(self.patch2.weight)?, y, 2, 1)?; // [C, N, 1]
        let y = g.add(y, g.weight(self.patch2.bias)?)?;
        let (c, r) = (y.ne()[0], (r + 1) / 2);
        let mut x = g.reshape(y, &[c, r, r, 1])?;
        for (i, b) in self.conv_blocks.iter().enumerate() {
            g.set_scope(format!("enc.conv{i}."));
            let h = GELU.forward(g, b.conv1.forward(g, x)?)?;
            let h = GELU.forward(g, b.conv2.depthwise(g, h, 1)?)?;
            let h = b.conv3.forward(g, h)?;
            x = GELU.forward(g, g.add(x, h)?)?;
        }
        let mut index = SideInputs::new("enc.bias_idx");
        let mut i = 0;
        for (s, stage) in self.stages.iter().enumerate() {
            g.set_scope(format!("enc.merge{s}."));
            let m = &stage.merge;
            let h = GELU.forward(g, m.conv1.forward(g, x)?)?;
            let h = GELU.forward(g, m.conv2.depthwise(g, h, m.stride)?)?;
            x = m.conv3.forward(g, h)?;
            for b in &stage.blocks {
                g.set_scope(format!("enc.blk{i}."));
                x = b.forward(g, x, &mut index)?;
                i += 1;
            }
        }
        Ok((self.neck.forward(g, x, self.grid)?, index))
    }
}

impl Block {
    fn load(w: &MappedWeights, i: usize, tv: &TinyVitHparams, stage: usize) -> Result<Self> {
        let p = layer_name("enc.blk.{i}", i);
        let lin = |n: &str| Linear::load(w, &format!("{p}.{n}"));
        Ok(Block {
            attn_norm: LayerNorm::load(w, &format!("{p}.attn_norm"), tv.eps)?,
            q: lin("attn_q")?,
            k: lin("attn_k")?,
            v: lin("attn_v")?,
            bias: w.weight(&format!("{p}.attn_bias"))?,
            out: lin("attn_out")?,
            local: ConvBn::load(w, &format!("{p}.local_conv"))?,
            ffn_norm: LayerNorm::load(w, &format!("{p}.ffn_norm"), tv.eps)?,
            mlp: Mlp::load(w, &p, GELU)?,
            heads: i64::from(tv.heads[stage]),
            window: i64::from(tv.windows[stage]),
        })
    }

    /// `x` [C, W, H, 1] -> [C, W, H, 1]: windowed attention (the windows
    /// padded with zeros before the attention's own LayerNorm, as
    /// `TinyViTBlock` pads), the local convolution, the MLP.
    fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'g>,
        index: &mut SideInputs<'g>,
    ) -> Result<Tensor<'g>> {
        let (ws, grid) = (self.window, x.ne()[1]);
        let (h, padded) = partition(g, x, ws)?; // [C, ws*ws, windows]
        let h = self.attn_norm.forward(g, h)?;
        let idx = index.get(g, ws, ws * ws * ws * ws)?;
        let qkv = (
            self.q.forward(g, h)?,
            self.k.forward(g, h)?,
            self.v.forward(g, h)?,
        );
        let o = attend(g, qkv, self.heads, |_, scores, scale| {
            let [n, _, hb, _] = scores.ne();
            // [H, Nq*Nk] rows of the bias table -> [Nk, Nq, H, 1], the same
            // for every window: softmax's mask, added after its scale.
            let b = g.get_rows(g.weight(self.bias)?, idx)?;
            let b = g.reshape(b, &[self.heads, n, n, 1])?;
            let b = g.cont(g.permute(b, [2, 0, 1, 3])?)?;
            let scores = g.reshape(scores, &[n, n, self.heads, hb / self.heads])?;
            let probs = g.soft_max_ext(scores, Some(b), scale)?;
            g.reshape(probs, &[n, n, hb])
        })?;
        let h = self.out.forward(g, o)?;
        let x = g.add(x, unpartition(g, h, ws, padded, grid)?)?;
        let x = self.local.depthwise(g, x, 1)?;
        let h = self.mlp.forward(g, self.ffn_norm.forward(g, x)?)?;
        g.add(x, h)
    }
}
