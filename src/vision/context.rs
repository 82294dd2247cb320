//! The context provider (`context_provider/`, "cross_attn_end_to_all"): after
//! every tower layer of the focal branch, a gated cross-attention block whose
//! keys and values come from the full-view features Z.

use super::siglip::{Act, Attention, AttnKernel, LayerNorm, Mlp};
use crate::error::{Error, Result};
use crate::sys::ggml::{Graph, MappedWeights, Tensor};
use crate::weights::{layer_name, VisionHparams};

/// `context_provider_module.layers.N`.
pub struct CrossAttnBlock {
    pub ln1: LayerNorm,
    pub cross_attn: Attention,
    pub ln2: LayerNorm,
    pub mlp: Mlp,
    /// Learned scalar gates, multiplied directly (no tanh).
    pub attn_factor: f32,
    pub mlp_factor: f32,
}

fn scalar(w: &MappedWeights, name: &str) -> Result<f32> {
    let v = w.read_f32(name)?;
    match v.as_slice() {
        [x] if x.is_finite() => Ok(*x),
        _ => Err(Error::InvalidModel(format!(
            "{name} must be one finite value"
        ))),
    }
}

impl CrossAttnBlock {
    pub fn load(
        w: &MappedWeights,
        hp: &VisionHparams,
        i: usize,
        act: Act,
        kernel: AttnKernel,
    ) -> Result<Self> {
        let p = layer_name("v.ctx.blk.{i}", i);
        Ok(CrossAttnBlock {
            ln1: LayerNorm::load(w, &format!("{p}.ln1"), hp.ctx_eps)?,
            cross_attn: Attention::load(w, &p, hp.ctx_heads, kernel)?,
            ln2: LayerNorm::load(w, &format!("{p}.ln2"), hp.ctx_eps)?,
            mlp: Mlp::load(w, &p, act)?,
            attn_factor: scalar(w, &format!("{p}.attn_factor"))?,
            mlp_factor: scalar(w, &format!("{p}.mlp_factor"))?,
        })
    }

    /// `x` [C, N, A] focal tokens, `z` [C, N, A] full-view features of the
    /// same images (or already zero-padded to k's and v's input width, as the
    /// vision graph passes them), `mask` the optional key mask.
    pub fn forward<'g>(
        &self,
        g: &'g Graph<'_>,
        x: Tensor<'_>,
        z: Tensor<'_>,
        mask: Option<Tensor<'_>>,
    ) -> Result<Tensor<'g>> {
        let h = self.ln1.forward(g, x)?;
        let h = self.cross_attn.forward(g, h, z, mask)?;
        let h = g.scale_bias(h, self.attn_factor, 0.0)?;
        let x = g.add(x, h)?;
        let h = self.ln2.forward(g, x)?;
        let h = self.mlp.forward(g, h)?;
        let h = g.scale_bias(h, self.mlp_factor, 0.0)?;
        g.add(x, h)
    }
}

/// Host-side key mask for `masked_cross_attn`: key token k is visible iff its
/// patch of the full view's region is not all zero (as the reference's
/// `get_token_mask_bias`). `mask` is the region as the full view sees it
/// ([`Views::full_mask`](crate::preprocess::Views::full_mask), [S, S]
/// row-major). Returns the [Nk, Nq] bias rows (0 or -inf).
pub fn key_mask_bias(mask: &[u8], image_size: usize, patch: usize, nq: usize) -> Vec<f32> {
    let grid = image_size / patch;
    let mut row = vec![f32::NEG_INFINITY; grid * grid];
    for (t, r) in row.iter_mut().enumerate() {
        let (py, px) = (t / grid, t % grid);
        let seen = (py * patch..(py + 1) * patch).any(|y| {
            let at = y * image_size + px * patch;
            mask[at..at + patch].iter().any(|&v| v != 0)
        });
        if seen {
            *r = 0.0;
        }
    }
    row.repeat(nq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_visible_where_its_patch_touches_the_region() {
        // 4 x 4 view, 2 x 2 patches: one region pixel at row 1, column 3.
        let mut mask = vec![0u8; 16];
        mask[4 + 3] = 1;
        let bias = key_mask_bias(&mask, 4, 2, 2);
        let inf = f32::NEG_INFINITY;
        assert_eq!(bias, [inf, 0.0, inf, inf, inf, 0.0, inf, inf]);
    }
}
