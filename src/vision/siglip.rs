//! SigLIP vision tower with the extra mask patch embedding
//! (`vision_tower/`: `embeddings.*`, `encoder.layers.N.*`).

use crate::error::{Error, Result};
use crate::sys::ggml::{Graph, MappedWeights, Tensor, Unary, Weight};
use crate::weights::{layer_name, VisionHparams};

/// `Linear` with bias.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Weight,
}

impl Linear {
    pub fn load(w: &MappedWeights, prefix: &str) -> Result<Self> {
        let l = Linear {
            weight: w.weight(&format!("{prefix}.weight"))?,
            bias: w.weight(&format!("{prefix}.bias"))?,
        };
        // The vision table checks each shape against the hyper-parameters;
        // this checks the pair agrees, which `forward` relies on.
        let (wn, bn) = (w.ne(l.weight)?, w.ne(l.bias)?);
        if bn != [wn[1], 1, 1, 1] {
            return Err(Error::InvalidModel(format!(
                "{prefix}: bias {bn:?} for weight {wn:?}"
            )));
        }
        Ok(l)
    }
    /// `x` zero-padded to the weight's input width, which a file may store
    /// wider than the model's (`VisionHparams::padded_for`): a no-op
    /// otherwise. Callers feeding several matrices pad once.
    pub fn pad_input<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let extra = g.weight(self.weight)?.ne()[0] - x.ne()[0];
        if extra <= 0 {
            return Ok(x);
        }
        g.pad(x, [extra as i32, 0, 0, 0])
    }

    /// `x` [K, N, B...] -> [out, N, B...]. A batch of images is multiplied
    /// as one [K, N*B] matrix: one larger product, and ggml's AMX kernels
    /// (repacked weights) only handle 2-D activations correctly.
    pub fn forward<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let (w, bias) = (g.weight(self.weight)?, g.weight(self.bias)?);
        let x = self.pad_input(g, x)?;
        let ne = x.ne();
        let rank = ne.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1);
        let y = if rank > 2 && x.is_contiguous() {
            let rows = ne[1..].iter().product::<i64>();
            let flat = g.reshape(x, &[ne[0], rows])?;
            let y = g.mul_mat(w, flat)?;
            let mut shape = ne[..rank].to_vec();
            shape[0] = w.ne()[1];
            g.reshape(y, &shape)?
        } else {
            g.mul_mat(w, x)?
        };
        g.add(y, bias)
    }
}

/// `LayerNorm` with affine weight and bias.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    pub weight: Weight,
    pub bias: Weight,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(w: &MappedWeights, prefix: &str, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: w.weight(&format!("{prefix}.weight"))?,
            bias: w.weight(&format!("{prefix}.bias"))?,
            eps,
        })
    }
    pub fn forward<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let y = g.norm(x, self.eps)?;
        let y = g.mul(y, g.weight(self.weight)?)?;
        g.add(y, g.weight(self.bias)?)
    }
}

/// The activation of the tower's and the context blocks' MLPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `gelu_pytorch_tanh`, exact (ggml's own CPU GELU uses an f16 table,
    /// ~1e-3 off, which would hide real errors at f32).
    GeluTanhExact,
    /// `gelu_pytorch_tanh` through ggml's table (fast; for quantized weights).
    GeluTanhFast,
    /// `gelu` (erf).
    GeluErf,
    /// `relu` (SAM's mask decoder).
    Relu,
}

impl Act {
    pub fn forward<'g>(self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        match self {
            Act::GeluErf => g.unary(x, Unary::GeluErf),
            Act::Relu => g.unary(x, Unary::Relu),
            Act::GeluTanhFast => g.unary(x, Unary::GeluTable),
            Act::GeluTanhExact => g.unary(x, Unary::GeluTanh),
        }
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Clone, Copy, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Act,
}

impl Mlp {
    pub fn load(w: &MappedWeights, prefix: &str, act: Act) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::load(w, &format!("{prefix}.ffn_up"))?,
            fc2: Linear::load(w, &format!("{prefix}.ffn_down"))?,
            act,
        })
    }
    pub fn forward<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let h = self.fc1.forward(g, x)?;
        let h = self.act.forward(g, h)?;
        self.fc2.forward(g, h)
    }
}

/// How the attention blocks compute softmax(q k^T) v.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKernel {
    /// Scores, softmax and weighted sum as separate ops (the only one with
    /// a key mask).
    Exact,
    /// ggml's fused flash attention with f32 K/V: f32 throughout, so as
    /// exact as `Exact` (worst f32 vision parity 9.8e-7 against 8.7e-7),
    /// and on the CPU the f32 vision stage takes 0.8x the time (it never
    /// writes the N x N scores).
    FlashF32,
    /// Fused with f16 K/V, the type ggml's GPU kernels take.
    FlashF16,
}

/// Multi-head attention with biases; self-attention when `kv` is `q_in`.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub out: Linear,
    pub heads: i64,
    pub kernel: AttnKernel,
}

impl Attention {
    pub fn load(w: &MappedWeights, prefix: &str, heads: u32, kernel: AttnKernel) -> Result<Self> {
        Ok(Attention {
            q: Linear::load(w, &format!("{prefix}.attn_q"))?,
            k: Linear::load(w, &format!("{prefix}.attn_k"))?,
            v: Linear::load(w, &format!("{prefix}.attn_v"))?,
            out: Linear::load(w, &format!("{prefix}.attn_out"))?,
            heads: heads as i64,
            kernel,
        })
    }

    /// `x_q` [C, Nq, B], `x_kv` [C, Nk, B]; `mask` [Nk, Nq, 1, B] added to the
    /// scores (cross-attention's optional key mask). Softmax in f32.
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x_q: Tensor<'g>,
        x_kv: Tensor<'g>,
        mask: Option<Tensor<'_>>,
    ) -> Result<Tensor<'g>> {
        let [c, nq, b, _] = x_q.ne();
        let nk = x_kv.ne()[1];
        let (h, d) = (self.heads, c / self.heads);
        // One padded copy per input (self-attention: one for all three).
        let same = x_q.is(&x_kv);
        let x_q = self.q.pad_input(g, x_q)?;
        let x_kv = if same {
            x_q
        } else {
            self.k.pad_input(g, x_kv)?
        };
        let q = self.q.forward(g, x_q)?;
        let k = self.k.forward(g, x_kv)?;
        let v = self.v.forward(g, x_kv)?;
        if self.kernel != AttnKernel::Exact && mask.is_none() {
            // Fused kernel: never materialises the N x N scores.
            let kv = |t: Tensor<'g>| -> Result<Tensor<'g>> {
                let t = g.permute(g.reshape(t, &[d, h, nk, b])?, [0, 2, 1, 3])?;
                match self.kernel {
                    AttnKernel::FlashF16 => g.cast_f16(t),
                    _ => Ok(t),
                }
            };
            let q = g.reshape(q, &[d, h, nq, b])?;
            let q = g.permute(q, [0, 2, 1, 3])?;
            let (k, v) = (kv(k)?, kv(v)?);
            let o = g.flash_attn(q, k, v, 1.0 / (d as f32).sqrt())?; // [D, H, Nq, B]
            let o = g.reshape(o, &[c, nq, b])?;
            return self.out.forward(g, o);
        }
        // [D, H, N, B] -> [D, N, H, B]
        // Queries contiguous: ggml's CPU GEMM (tinyBLAS) takes only a
        // contiguous right operand; a permuted one runs row dot products
        // at a third of its speed (19% of an f32 vision request).
        let q = g.reshape(q, &[d, h, nq, b])?;
        let q = g.cont(g.permute(q, [0, 2, 1, 3])?)?;
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
pub struct EncoderLayer {
    pub ln1: LayerNorm,
    pub attn: Attention,
    pub ln2: LayerNorm,
    pub mlp: Mlp,
}

impl EncoderLayer {
    pub fn load(
        w: &MappedWeights,
        hp: &VisionHparams,
        i: usize,
        act: Act,
        kernel: AttnKernel,
    ) -> Result<Self> {
        let p = layer_name("v.blk.{i}", i);
        Ok(EncoderLayer {
            ln1: LayerNorm::load(w, &format!("{p}.ln1"), hp.eps)?,
            attn: Attention::load(w, &p, hp.heads, kernel)?,
            ln2: LayerNorm::load(w, &format!("{p}.ln2"), hp.eps)?,
            mlp: Mlp::load(w, &p, act)?,
        })
    }
    pub fn forward<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>) -> Result<Tensor<'g>> {
        let h = self.ln1.forward(g, x)?;
        let h = self.attn.forward(g, h, h, None)?;
        let x = g.add(x, h)?;
        let h = self.ln2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        g.add(x, h)
    }
}

/// `embeddings`: RGB and mask patch convolutions plus positions.
pub struct Embeddings {
    pub patch: Weight,
    pub patch_bias: Weight,
    pub mask_patch: Weight,
    pub mask_patch_bias: Weight,
    pub position: Weight,
}

impl Embeddings {
    pub fn load(w: &MappedWeights) -> Result<Self> {
        Ok(Embeddings {
            patch: w.weight("v.patch_embd.weight")?,
            patch_bias: w.weight("v.patch_embd.bias")?,
            mask_patch: w.weight("v.mask_patch_embd.weight")?,
            mask_patch_bias: w.weight("v.mask_patch_embd.bias")?,
            position: w.weight("v.position_embd.weight")?,
        })
    }

    /// `rgb` [S, S, 3, B], `mask` [S, S, 1, B] -> tokens [C, g*g, B]
    /// (row-major patches; the stride-P convolution drops trailing pixels).
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        rgb: Tensor<'g>,
        mask: Tensor<'g>,
    ) -> Result<Tensor<'g>> {
        let e = g.patch_embed(g.weight(self.patch)?, rgb)?; // [C, N, B]
        let m = g.patch_embed(g.weight(self.mask_patch)?, mask)?;
        let e = g.add(e, m)?;
        let e = g.add(e, g.weight(self.patch_bias)?)?;
        let e = g.add(e, g.weight(self.mask_patch_bias)?)?;
        g.add(e, g.weight(self.position)?)
    }
}

/// The used part of the tower: embeddings and layers 0..used_layers.
pub struct VisionTower {
    pub embeddings: Embeddings,
    pub layers: Vec<EncoderLayer>,
}

impl VisionTower {
    pub fn load(
        w: &MappedWeights,
        hp: &VisionHparams,
        act: Act,
        kernel: AttnKernel,
    ) -> Result<Self> {
        let layers = (0..hp.used_layers() as usize)
            .map(|i| EncoderLayer::load(w, hp, i, act, kernel))
            .collect::<Result<_>>()?;
        Ok(VisionTower {
            embeddings: Embeddings::load(w)?,
            layers,
        })
    }
}
