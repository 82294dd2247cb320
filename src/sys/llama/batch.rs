//! llama_batch, owned: the rows one llama_decode call reads.

use super::{c_len, ffi};
use crate::error::{Error, Result};

/// A llama_batch from llama_batch_init, freed on drop.
pub(super) struct Batch {
    pub(super) raw: ffi::llama_batch,
    cap: usize,
    n_embd: usize,
}

impl Batch {
    /// A batch of `cap` rows: token ids (`n_embd == 0`) or embedding rows.
    pub(super) fn new(cap: usize, n_embd: usize) -> Result<Batch> {
        let c = c_len(cap, "batch")?;
        let e = c_len(n_embd, "embedding width")?;
        if cap == 0 || cap.checked_mul(n_embd.max(1)).is_none() {
            return Err(Error::InvalidArgument("bad batch size".into()));
        }
        // SAFETY: positive sizes; llama_batch_init mallocs the arrays and
        // leaves them uninitialised (we fill every used entry).
        let raw = unsafe { ffi::llama_batch_init(c, e, 1) };
        let b = Batch { raw, cap, n_embd };
        let data_ok = if n_embd == 0 {
            !raw.token.is_null()
        } else {
            !raw.embd.is_null()
        };
        if !data_ok
            || raw.pos.is_null()
            || raw.n_seq_id.is_null()
            || raw.seq_id.is_null()
            || raw.logits.is_null()
        {
            return Err(Error::Backend("llama_batch_init: out of memory".into()));
        }
        Ok(b)
    }

    /// Fills rows 0..n with positions pos0.., sequence `seq` and the output
    /// flag on the last row only if `logits_last`.
    pub(super) fn fill_common(&mut self, n: usize, pos0: i32, seq: i32, logits_last: bool) {
        self.fill_rows(n, |i| (pos0 + i as i32, seq, logits_last && i + 1 == n));
    }

    /// Fills rows 0..n with (position, sequence, output flag) of `row(i)`.
    pub(super) fn fill_rows(&mut self, n: usize, row: impl Fn(usize) -> (i32, i32, bool)) {
        debug_assert!(n <= self.cap);
        // SAFETY: the arrays were allocated by llama_batch_init with `cap`
        // entries (checked non-null in `new`), `n <= cap`; each `seq_id[i]`
        // points at room for one id (allocated with n_seq_max = 1).
        unsafe {
            let pos = std::slice::from_raw_parts_mut(self.raw.pos, n);
            let nseq = std::slice::from_raw_parts_mut(self.raw.n_seq_id, n);
            let seq = std::slice::from_raw_parts_mut(self.raw.seq_id, n);
            let out = std::slice::from_raw_parts_mut(self.raw.logits, n);
            for i in 0..n {
                let (p, s, o) = row(i);
                pos[i] = p;
                nseq[i] = 1;
                *seq[i] = s;
                out[i] = i8::from(o);
            }
        }
        self.raw.n_tokens = n as i32;
    }

    pub(super) fn set_tokens(&mut self, toks: &[i32]) {
        debug_assert!(self.n_embd == 0 && toks.len() <= self.cap);
        // SAFETY: `token` has `cap >= toks.len()` entries (non-null, token batch).
        unsafe {
            std::slice::from_raw_parts_mut(self.raw.token, toks.len()).copy_from_slice(toks);
        }
    }

    pub(super) fn set_embd(&mut self, rows: &[f32]) {
        debug_assert!(self.n_embd > 0 && rows.len() <= self.cap * self.n_embd);
        // SAFETY: `embd` has `cap * n_embd >= rows.len()` floats (non-null,
        // embedding batch).
        unsafe {
            std::slice::from_raw_parts_mut(self.raw.embd, rows.len()).copy_from_slice(rows);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from llama_batch_init and is freed once; the
        // seq_id array is NULL-terminated by llama_batch_init.
        unsafe { ffi::llama_batch_free(self.raw) };
    }
}
