//! `mm_projector/` of type `mlp_downsample`: 2x2 token merge (transposed
//! order), LayerNorm, Linear, exact GELU, Linear.

use super::siglip::{LayerNorm, Linear};
use crate::error::Result;
use crate::sys::ggml::{Graph, MappedWeights, Tensor, Unary};
use crate::weights::VisionHparams;

pub struct Projector {
    pub norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Projector {
    pub fn load(w: &MappedWeights, hp: &VisionHparams) -> Result<Self> {
        Ok(Projector {
            norm: LayerNorm::load(w, "mm.norm", hp.proj_eps)?,
            fc1: Linear::load(w, "mm.fc1")?,
            fc2: Linear::load(w, "mm.fc2")?,
        })
    }

    /// `merged` [4C, T, B] -> [H, T, B].
    pub fn forward<'g>(&self, g: &'g Graph<'_>, merged: Tensor<'_>) -> Result<Tensor<'g>> {
        let x = self.norm.forward(g, merged)?;
        let x = self.fc1.forward(g, x)?;
        let x = g.unary(x, Unary::GeluErf)?;
        self.fc2.forward(g, x)
    }
}

/// Row indices for the 2x2 merge as one `get_rows` over rows of 2C values.
///
/// The padded grid [C, 2G cols, 2G rows, B] is read as rows of 2C (a pair of
/// horizontally adjacent tokens): row (p, r, b) = p + G*(r + 2G*b), p the
/// column pair. Output token t = p*G + q (column pair major — the reference's
/// transposed order) is [row (p, 2q), row (p, 2q+1)], i.e.
/// `X[2q,2p] | X[2q,2p+1] | X[2q+1,2p] | X[2q+1,2p+1]`.
pub fn merge_indices(grid_pairs: usize, batch: usize) -> Vec<i32> {
    let gp = grid_pairs;
    let mut idx = Vec::with_capacity(2 * gp * gp * batch);
    for b in 0..batch {
        for p in 0..gp {
            for q in 0..gp {
                for rr in 0..2 {
                    let r = 2 * q + rr;
                    idx.push((p + gp * (r + 2 * gp * b)) as i32);
                }
            }
        }
    }
    idx
}

/// Pads F [C, N, B] (N = g*g) to an even grid and merges 2x2 cells:
/// -> [4C, G*G, B].
pub fn merge_2x2<'g>(
    g: &'g Graph<'_>,
    f: Tensor<'_>,
    grid: i64,
    idx: Tensor<'_>,
) -> Result<Tensor<'g>> {
    let [c, _, b, _] = f.ne();
    let gp = (grid + 1) / 2;
    let x = g.reshape(f, &[c, grid, grid, b])?;
    let x = if grid % 2 == 1 {
        g.pad(x, [0, 1, 1, 0])?
    } else {
        x
    };
    let x = g.cont(x)?;
    let rows = g.reshape(x, &[2 * c, gp * 2 * gp * b])?;
    let m = g.get_rows(rows, idx)?; // [2C, 2*T*B]
    g.reshape(m, &[4 * c, gp * gp, b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_matches_reference() {
        // g = 3 -> padded 4x4, G = 2; token t = p*G + q.
        let idx = merge_indices(2, 1);
        // t = 0 (p=0,q=0): rows r=0,1 at col pair 0 -> rows 0, 2
        assert_eq!(&idx[0..2], &[0, 2]);
        // t = 1 (p=0,q=1): rows r=2,3 -> 4, 6
        assert_eq!(&idx[2..4], &[4, 6]);
        // t = 2 (p=1,q=0): col pair 1, rows 0,1 -> 1, 3
        assert_eq!(&idx[4..6], &[1, 3]);
    }
}
