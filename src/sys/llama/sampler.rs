//! llama.cpp's sampler chains.

use std::ptr::NonNull;

use super::backend::init_backend;
use super::context::LlamaContext;
use super::ffi;
use crate::error::{Error, Result};

/// Sampling settings for [`Sampler`].
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// <= 0: greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens (<= 0: off).
    pub top_k: i32,
    /// Keep the smallest set with cumulative probability >= top_p (>= 1: off).
    pub top_p: f32,
    pub seed: u32,
}

/// A llama.cpp sampler chain: greedy, or top-k → temperature → top-p →
/// random draw (the order of Hugging Face `generate`, which the reference
/// uses: its temperature warper runs before top-k / top-p; top-k commutes
/// with temperature, top-p does not).
pub struct Sampler {
    ptr: NonNull<ffi::llama_sampler>,
    greedy: bool,
}

// SAFETY: a sampler chain is plain heap state with no thread affinity.
unsafe impl Send for Sampler {}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain came from llama_sampler_chain_init and owns the
        // samplers added to it; freed once.
        unsafe { ffi::llama_sampler_free(self.ptr.as_ptr()) };
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("greedy", &self.greedy)
            .finish()
    }
}

impl Sampler {
    pub fn new(params: &SamplerParams) -> Result<Sampler> {
        init_backend();
        if !params.temperature.is_finite() {
            return Err(Error::InvalidArgument("temperature must be finite".into()));
        }
        if !params.top_p.is_finite() || params.top_p <= 0.0 {
            return Err(Error::InvalidArgument("top_p must be in (0, 1]".into()));
        }
        // SAFETY: plain constructor; null is handled.
        let chain = unsafe {
            let cp = ffi::llama_sampler_chain_default_params();
            ffi::llama_sampler_chain_init(cp)
        };
        let ptr = NonNull::new(chain)
            .ok_or_else(|| Error::Backend("llama_sampler_chain_init failed".into()))?;
        let s = Sampler {
            ptr,
            greedy: params.temperature <= 0.0,
        };
        let add = |smpl: *mut ffi::llama_sampler| -> Result<()> {
            if smpl.is_null() {
                return Err(Error::Backend("llama sampler init failed".into()));
            }
            // SAFETY: both pointers are valid; the chain takes ownership of
            // `smpl` and frees it with itself.
            unsafe { ffi::llama_sampler_chain_add(ptr.as_ptr(), smpl) };
            Ok(())
        };
        // The constructors below take validated plain arguments and return
        // a new sampler or null (rejected by `add`).
        if s.greedy {
            // SAFETY: no arguments; see above.
            add(unsafe { ffi::llama_sampler_init_greedy() })?;
        } else {
            if params.top_k > 0 {
                // SAFETY: k > 0; see above.
                add(unsafe { ffi::llama_sampler_init_top_k(params.top_k) })?;
            }
            // SAFETY: finite temperature > 0; see above.
            add(unsafe { ffi::llama_sampler_init_temp(params.temperature) })?;
            if params.top_p < 1.0 {
                // SAFETY: p in (0, 1), min_keep 1; see above.
                add(unsafe { ffi::llama_sampler_init_top_p(params.top_p, 1) })?;
            }
            // SAFETY: any seed is valid; see above.
            add(unsafe { ffi::llama_sampler_init_dist(params.seed) })?;
        }
        Ok(s)
    }

    /// Whether this is the deterministic argmax sampler.
    pub fn is_greedy(&self) -> bool {
        self.greedy
    }

    /// Picks a token from explicit logits (one per vocabulary entry) and
    /// accepts it.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<i32> {
        if logits.is_empty() || i32::try_from(logits.len()).is_err() {
            return Err(Error::InvalidArgument("bad logits length".into()));
        }
        let mut cur: Vec<ffi::llama_token_data> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| ffi::llama_token_data {
                id: i as i32,
                logit: l,
                p: 0.0,
            })
            .collect();
        let mut arr = ffi::llama_token_data_array {
            data: cur.as_mut_ptr(),
            size: cur.len(),
            selected: -1,
            sorted: false,
        };
        // SAFETY: valid chain; `arr` describes `cur`, which outlives the
        // call; samplers may reorder/shrink the array in place (they only
        // touch its `size` elements).
        unsafe { ffi::llama_sampler_apply(self.ptr.as_ptr(), &mut arr) };
        let sel = usize::try_from(arr.selected)
            .ok()
            .filter(|&s| s < arr.size)
            .ok_or_else(|| Error::Backend("sampler selected no token".into()))?;
        // `arr.data` may have been re-pointed by a sampler; read through it.
        // SAFETY: `sel < arr.size`, and `arr.data` points at `arr.size`
        // valid elements (either `cur` or sampler-owned storage).
        let tok = unsafe { (*arr.data.add(sel)).id };
        if tok < 0 || tok as usize >= logits.len() {
            return Err(Error::Backend(format!("sampler returned token {tok}")));
        }
        self.accept(tok);
        Ok(tok)
    }

    /// Picks a token from the context's logits row `idx` (-1 = last; the
    /// context keeps one row, so -1 and 0 are the valid values) and accepts
    /// it.
    pub fn sample(&mut self, ctx: &mut LlamaContext, idx: i32) -> Result<i32> {
        if idx != -1 && idx != 0 {
            return Err(Error::InvalidArgument(format!(
                "logits row {idx} does not exist"
            )));
        }
        let logits = ctx.logits_last()?;
        self.sample_logits(logits)
    }

    /// Tells the chain that `tok` was chosen (updates stateful samplers).
    pub fn accept(&mut self, tok: i32) {
        // SAFETY: valid chain; accept only updates sampler state.
        unsafe { ffi::llama_sampler_accept(self.ptr.as_ptr(), tok) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_sampler_picks_argmax() {
        let mut s = Sampler::new(&SamplerParams {
            temperature: 0.0,
            top_k: 50,
            top_p: 0.5,
            seed: 1,
        })
        .unwrap();
        assert!(s.is_greedy());
        assert_eq!(s.sample_logits(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
        assert!(s.sample_logits(&[]).is_err());
    }

    #[test]
    fn random_sampler_respects_top_k() {
        let mut s = Sampler::new(&SamplerParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        })
        .unwrap();
        for _ in 0..50 {
            let t = s.sample_logits(&[5.0, 0.0, 5.0, -3.0]).unwrap();
            assert!(t == 0 || t == 2);
        }
    }

    #[test]
    fn sampler_rejects_bad_params() {
        let p = SamplerParams {
            temperature: f32::NAN,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        assert!(Sampler::new(&p).is_err());
        let p = SamplerParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.0,
            seed: 0,
        };
        assert!(Sampler::new(&p).is_err());
    }
}
