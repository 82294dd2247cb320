//! SigLIP vision tower with the extra mask patch embedding
//! (`vision_tower/`: `embeddings.*`, `encoder.layers.N.*`).

use crate::error::Result;
use crate::sys::ggml::{Graph, MappedWeights, Tensor, Unary};
use crate::weights::{layer_name, VisionHparams};

/// `Linear` with bias.
#[derive(Clone, Copy)]
pub struct Linear<'w> {
    pub weight: Tensor<'w>,
    pub bias: Tensor<'w>,
}

impl<'w> Linear<'w> {
    pub fn load(w: &'w MappedWeights, prefix: &str) -> Result<Self> {
        Ok(Linear {
            weight: w.get(&format!("{prefix}.weight"))?,
            bias: w.get(&format!("{prefix}.bias"))?,
        })
    }
    /// `x` [K, N, B...] -> [out, N, B...]. A batch of images is multiplied
    /// as one [K, N*B] matrix: one larger product, and ggml's AMX kernels
    /// (repacked weights) only handle 2-D activations correctly.
    pub fn forward<'g>(&self, g: &mut Graph, x: Tensor<'_>) -> Result<Tensor<'g>> {
        let ne = x.ne();
        let rank = ne.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
        let y = if rank > 2 && x.is_contiguous() {
            let rows = ne[1..].iter().product::<i64>();
            let flat = g.reshape(x, &[ne[0], rows])?;
            let y = g.mul_mat(self.weight, flat)?;
            let mut shape = ne[..rank].to_vec();
            shape[0] = self.weight.ne()[1];
            g.reshape(y, &shape)?
        } else {
            g.mul_mat(self.weight, x)?
        };
        g.add(y, self.bias)
    }
}

/// `LayerNorm` with affine weight and bias.
#[derive(Clone, Copy)]
pub struct LayerNorm<'w> {
    pub weight: Tensor<'w>,
    pub bias: Tensor<'w>,
    pub eps: f32,
}

impl<'w> LayerNorm<'w> {
    pub fn load(w: &'w MappedWeights, prefix: &str, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.get(&format!("{prefix}.weight"))?,
            bias: w.get(&format!("{prefix}.bias"))?,
            eps,
        })
    }
    pub fn forward<'g>(&self, g: &mut Graph, x: Tensor<'_>) -> Result<Tensor<'g>> {
        let y = g.norm(x, self.eps)?;
        let y = g.mul(y, self.weight)?;
        g.add(y, self.bias)
    }
}

/// The activation of the tower's and the context blocks' MLPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `gelu_pytorch_tanh`, composed from exact ops (ggml's own GELU uses an
    /// f16 table, ~1e-3 off, which would hide real errors at f32).
    GeluTanhExact,
    /// `gelu_pytorch_tanh` through ggml's table (fast; for quantized weights).
    GeluTanhFast,
    /// `gelu` (erf).
    GeluErf,
}

impl Act {
    pub fn forward<'g>(self, g: &mut Graph, x: Tensor<'_>) -> Result<Tensor<'g>> {
        match self {
            Act::GeluErf => g.unary(x, Unary::GeluErf),
            Act::GeluTanhFast => g.unary(x, Unary::GeluTable),
            Act::GeluTanhExact => {
                // 0.5 x (1 + tanh(c x (1 + 0.044715 x^2))), c = sqrt(2/pi)
                let c = (2.0f32 / std::f32::consts::PI).sqrt();
                let x2 = g.unary(x, Unary::Sqr)?;
                let u = g.scale_bias(x2, 0.044715 * c, c)?;
                let inner = g.mul(u, x)?;
                let t = g.unary(inner, Unary::Tanh)?;
                let t = g.scale_bias(t, 0.5, 0.5)?;
                g.mul(t, x)
            }
        }
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Clone, Copy)]
pub struct Mlp<'w> {
    pub fc1: Linear<'w>,
    pub fc2: Linear<'w>,
    pub act: Act,
}

impl<'w> Mlp<'w> {
    pub fn load(w: &'w MappedWeights, prefix: &str, act: Act) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::load(w, &format!("{prefix}.ffn_up"))?,
            fc2: Linear::load(w, &format!("{prefix}.ffn_down"))?,
            act,
        })
    }
    pub fn forward<'g>(&self, g: &mut Graph, x: Tensor<'_>) -> Result<Tensor<'g>> {
        let h = self.fc1.forward(g, x)?;
        let h = self.act.forward(g, h)?;
        self.fc2.forward(g, h)
    }
}

/// Multi-head attention with biases; self-attention when `kv` is `q_in`.
#[derive(Clone, Copy)]
pub struct Attention<'w> {
    pub q: Linear<'w>,
    pub k: Linear<'w>,
    pub v: Linear<'w>,
    pub out: Linear<'w>,
    pub heads: i64,
    /// Use ggml's fused flash attention (f16 K/V); off for f32 weights,
    /// where the exact path keeps reference parity.
    pub flash: bool,
}

impl<'w> Attention<'w> {
    pub fn load(w: &'w MappedWeights, prefix: &str, heads: u32, flash: bool) -> Result<Self> {
        Ok(Attention {
            q: Linear::load(w, &format!("{prefix}.attn_q"))?,
            k: Linear::load(w, &format!("{prefix}.attn_k"))?,
            v: Linear::load(w, &format!("{prefix}.attn_v"))?,
            out: Linear::load(w, &format!("{prefix}.attn_out"))?,
            heads: heads as i64,
            flash,
        })
    }

    /// `x_q` [C, Nq, B], `x_kv` [C, Nk, B]; `mask` [Nk, Nq, 1, B] added to the
    /// scores (cross-attention's optional key mask). Softmax in f32.
    pub fn forward<'g>(
        &self,
        g: &mut Graph,
        x_q: Tensor<'_>,
        x_kv: Tensor<'_>,
        mask: Option<Tensor<'_>>,
    ) -> Result<Tensor<'g>> {
        let [c, nq, b, _] = x_q.ne();
        let nk = x_kv.ne()[1];
        let (h, d) = (self.heads, c / self.heads);
        let q = self.q.forward(g, x_q)?;
        let k = self.k.forward(g, x_kv)?;
        let v = self.v.forward(g, x_kv)?;
        if self.flash && mask.is_none() {
            // Fused kernel with f16 K/V: never materialises the N x N scores.
            let q = g.reshape(q, &[d, h, nq, b])?;
            let q = g.permute(q, [0, 2, 1, 3])?;
            let k = g.reshape(k, &[d, h, nk, b])?;
            let k = g.permute(k, [0, 2, 1, 3])?;
            let k = g.cast_f16(k)?;
            let v = g.reshape(v, &[d, h, nk, b])?;
            let v = g.permute(v, [0, 2, 1, 3])?;
            let v = g.cast_f16(v)?;
            let o = g.flash_attn(q, k, v, 1.0 / (d as f32).sqrt())?; // [D, H, Nq, B]
            let o = g.reshape(o, &[c, nq, b])?;
            return self.out.forward(g, o);
        }
        // [D, H, N, B] -> [D, N, H, B]
        let q = g.reshape(q, &[d, h, nq, b])?;
        let q = g.permute(q, [0, 2, 1, 3])?;
        let k = g.reshape(k, &[d, h, nk, b])?;
        let k = g.permute(k, [0, 2, 1, 3])?;
        // [D, H, Nk, B] -> [Nk, D, H, B]
        let v = g.reshape(v, &[d, h, nk, b])?;
        let v = g.permute(v, [1, 2, 0, 3])?;
        let v = g.cont(v)?;
        let kq = g.mul_mat(k, q)?; // [Nk, Nq, H, B]
        let kq = g.soft_max_ext(kq, mask, 1.0 / (d as f32).sqrt())?;
        let kqv = g.mul_mat(v, kq)?; // [D, Nq, H, B]
        let o = g.permute(kqv, [0, 2, 1, 3])?;
        let o = g.cont(o)?;
        let o = g.reshape(o, &[c, nq, b])?;
        self.out.forward(g, o)
    }
}

/// `encoder.layers.N`: pre-norm self-attention and MLP.
pub struct EncoderLayer<'w> {
    pub ln1: LayerNorm<'w>,
    pub attn: Attention<'w>,
    pub ln2: LayerNorm<'w>,
    pub mlp: Mlp<'w>,
}

impl<'w> EncoderLayer<'w> {
    pub fn load(
        w: &'w MappedWeights,
        hp: &VisionHparams,
        i: usize,
        act: Act,
        flash: bool,
    ) -> Result<Self> {
        let p = layer_name("v.blk.{i}", i);
        Ok(EncoderLayer {
            ln1: LayerNorm::load(w, &format!("{p}.ln1"), hp.eps)?,
            attn: Attention::load(w, &p, hp.heads, flash)?,
            ln2: LayerNorm::load(w, &format!("{p}.ln2"), hp.eps)?,
            mlp: Mlp::load(w, &p, act)?,
        })
    }
    pub fn forward<'g>(&self, g: &mut Graph, x: Tensor<'_>) -> Result<Tensor<'g>> {
        let h = self.ln1.forward(g, x)?;
        let h = self.attn.forward(g, h, h, None)?;
        let x = g.add(x, h)?;
        let h = self.ln2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        g.add(x, h)
    }
}

/// `embeddings`: RGB and mask patch convolutions plus positions.
pub struct Embeddings<'w> {
    pub patch: Tensor<'w>,
    pub patch_bias: Tensor<'w>,
    pub mask_patch: Tensor<'w>,
    pub mask_patch_bias: Tensor<'w>,
    pub position: Tensor<'w>,
}

impl<'w> Embeddings<'w> {
    pub fn load(w: &'w MappedWeights) -> Result<Self> {
        Ok(Embeddings {
            patch: w.get("v.patch_embd.weight")?,
            patch_bias: w.get("v.patch_embd.bias")?,
            mask_patch: w.get("v.mask_patch_embd.weight")?,
            mask_patch_bias: w.get("v.mask_patch_embd.bias")?,
            position: w.get("v.position_embd.weight")?,
        })
    }

    /// `rgb` [S, S, 3, B], `mask` [S, S, 1, B] -> tokens [C, g*g, B]
    /// (row-major patches; the stride-P convolution drops trailing pixels).
    pub fn forward<'g>(
        &self,
        g: &mut Graph,
        rgb: Tensor<'_>,
        mask: Tensor<'_>,
    ) -> Result<Tensor<'g>> {
        let e = g.patch_embed(self.patch, rgb)?; // [C, N, B]
        let m = g.patch_embed(self.mask_patch, mask)?;
        let e = g.add(e, m)?;
        let e = g.add(e, self.patch_bias)?;
        let e = g.add(e, self.mask_patch_bias)?;
        g.add(e, self.position)
    }
}

/// The used part of the tower: embeddings and layers 0..used_layers.
pub struct VisionTower<'w> {
    pub embeddings: Embeddings<'w>,
    pub layers: Vec<EncoderLayer<'w>>,
}

impl<'w> VisionTower<'w> {
    pub fn load(w: &'w MappedWeights, hp: &VisionHparams, act: Act, flash: bool) -> Result<Self> {
        let layers = (0..hp.used_layers() as usize)
            .map(|i| EncoderLayer::load(w, hp, i, act, flash))
            .collect::<Result<_>>()?;
        Ok(VisionTower {
            embeddings: Embeddings::load(w)?,
            layers,
        })
    }
}
