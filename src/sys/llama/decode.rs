//! Decoding into a context (token ids, embedding rows, one step of several
//! sequences) and reading the logits.

use super::batch::Batch;
use super::context::LlamaContext;
use super::ffi;
use super::logging::{take_last_error, with_detail};
use crate::error::{Error, Result};

impl LlamaContext {
    fn check_range(&self, pos0: usize, n: usize) -> Result<i32> {
        match pos0.checked_add(n) {
            Some(end) if end <= self.n_ctx => {}
            _ => {
                return Err(Error::ContextOverflow(format!(
                    "positions {pos0}..{} exceed the context of {} tokens",
                    pos0.saturating_add(n),
                    self.n_ctx
                )))
            }
        }
        i32::try_from(pos0).map_err(|_| Error::ContextOverflow(format!("position {pos0}")))
    }

    fn decode(&mut self, batch: &Batch) -> Result<()> {
        take_last_error();
        // SAFETY: valid context; `batch` is fully initialised for its
        // `n_tokens` rows (tokens or embeddings, positions, one sequence id
        // each, output flags); llama_decode only reads it.
        let rc = unsafe { ffi::llama_decode(self.ptr.as_ptr(), batch.raw) };
        match rc {
            0 => Ok(()),
            1 => Err(Error::ContextOverflow(with_detail(
                "no KV-cache slot for the batch".into(),
            ))),
            2 => Err(Error::Cancelled),
            rc => Err(Error::Backend(with_detail(format!(
                "llama_decode returned {rc}"
            )))),
        }
    }

    fn check_seq(&self, seq: usize) -> Result<i32> {
        if seq >= self.n_seq_max {
            return Err(Error::InvalidArgument(format!(
                "sequence {seq} outside the context's {} sequences",
                self.n_seq_max
            )));
        }
        Ok(seq as i32)
    }

    /// Decodes token ids at positions pos0.. (sequence 0), in chunks of at
    /// most [`Self::n_batch`]. With `logits_last` the logits of the last
    /// token are kept for [`Self::logits_last`].
    pub fn decode_tokens(&mut self, tokens: &[i32], pos0: usize, logits_last: bool) -> Result<()> {
        self.decode_tokens_seq(tokens, pos0, 0, logits_last)
    }

    /// As [`Self::decode_tokens`], for sequence `seq`.
    pub fn decode_tokens_seq(
        &mut self,
        tokens: &[i32],
        pos0: usize,
        seq: usize,
        logits_last: bool,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to decode".into()));
        }
        self.check_tokens(tokens)?;
        let seq = self.check_seq(seq)?;
        let pos0 = self.check_range(pos0, tokens.len())?;
        self.out_rows.clear();
        let mut batch = Batch::new(self.n_batch.min(tokens.len()), 0)?;
        let n_chunks = tokens.len().div_ceil(self.n_batch);
        for (i, chunk) in tokens.chunks(self.n_batch).enumerate() {
            let last = i + 1 == n_chunks;
            batch.set_tokens(chunk);
            batch.fill_common(
                chunk.len(),
                pos0 + (i * self.n_batch) as i32,
                seq,
                last && logits_last,
            );
            self.decode(&batch)?;
        }
        self.out_rows = if logits_last { vec![-1] } else { Vec::new() };
        Ok(())
    }

    fn check_tokens(&self, tokens: &[i32]) -> Result<()> {
        let n_vocab = self.model.n_vocab();
        match tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
            Some(t) => Err(Error::InvalidArgument(format!(
                "token id {t} outside the vocabulary (0..{n_vocab})"
            ))),
            None => Ok(()),
        }
    }

    /// Decodes embedding rows (`rows.len() / n_embd` rows of
    /// [`LlamaModel::n_embd`] floats, row-major) at positions pos0..
    /// (sequence 0), in chunks of at most [`Self::n_batch`].
    ///
    /// [`LlamaModel::n_embd`]: super::LlamaModel::n_embd
    pub fn decode_embd(&mut self, rows: &[f32], pos0: usize, logits_last: bool) -> Result<()> {
        self.decode_embd_seq(rows, pos0, 0, logits_last)
    }

    /// As [`Self::decode_embd`], for sequence `seq`.
    pub fn decode_embd_seq(
        &mut self,
        rows: &[f32],
        pos0: usize,
        seq: usize,
        logits_last: bool,
    ) -> Result<()> {
        let n = self.embd_rows(rows, "embedding buffer")?;
        let seq = self.check_seq(seq)?;
        let pos0 = self.check_range(pos0, n)?;
        let meta: Vec<(i32, i32, bool)> = (0..n)
            .map(|i| (pos0 + i as i32, seq, logits_last && i + 1 == n))
            .collect();
        self.decode_embd_rows(rows, &meta, |_| Ok(()))
    }

    /// Prefills several sequences from embedding rows in as few decodes as
    /// the batch allows: `seqs[j]` (rows of [`LlamaModel::n_embd`] floats)
    /// goes into sequence `j` at positions 0.. (its cells must be empty).
    /// Returns the logits of each sequence's last row (copied: a sequence
    /// may end in an earlier chunk than the last).
    ///
    /// [`LlamaModel::n_embd`]: super::LlamaModel::n_embd
    pub fn decode_embd_seqs(&mut self, seqs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() || seqs.len() > self.n_seq_max {
            return Err(Error::InvalidArgument(format!(
                "{} sequences (1..={} allowed)",
                seqs.len(),
                self.n_seq_max
            )));
        }
        let mut meta: Vec<(i32, i32, bool)> = Vec::new();
        for (j, rows) in seqs.iter().enumerate() {
            let n = self.embd_rows(rows, &format!("sequence {j}"))?;
            self.check_range(0, n)?;
            meta.extend((0..n).map(|i| (i as i32, j as i32, i + 1 == n)));
        }
        if meta.len() > self.n_ctx {
            return Err(Error::ContextOverflow(format!(
                "{} rows exceed the context of {} cells",
                meta.len(),
                self.n_ctx
            )));
        }
        let mut logits = Vec::with_capacity(seqs.len());
        self.decode_embd_rows(&seqs.concat(), &meta, |ctx| {
            for i in 0..ctx.out_rows.len() {
                logits.push(ctx.logits_ith(i)?.to_vec());
            }
            Ok(())
        })?;
        Ok(logits)
    }

    /// The number of rows in `rows`: a non-empty multiple of n_embd floats.
    fn embd_rows(&self, rows: &[f32], what: &str) -> Result<usize> {
        let n_embd = self.model.n_embd();
        if rows.is_empty() || rows.len() % n_embd != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what} of {} floats is not a non-empty multiple of n_embd = {n_embd}",
                rows.len()
            )));
        }
        Ok(rows.len() / n_embd)
    }

    /// Decodes embedding rows (one `(position, sequence, output)` per row,
    /// checked by the caller) in batches of at most [`Self::n_batch`] rows.
    /// After each batch, the logits of its output rows are available
    /// ([`Self::logits_ith`]) to `each`.
    fn decode_embd_rows(
        &mut self,
        rows: &[f32],
        meta: &[(i32, i32, bool)],
        mut each: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let n_embd = self.model.n_embd();
        self.out_rows.clear();
        let mut batch = Batch::new(self.n_batch.min(meta.len()), n_embd)?;
        for (chunk, m) in rows
            .chunks(self.n_batch * n_embd)
            .zip(meta.chunks(self.n_batch))
        {
            batch.set_embd(chunk);
            batch.fill_rows(m.len(), |i| m[i]);
            self.out_rows.clear();
            self.decode(&batch)?;
            self.out_rows = (0..m.len() as i32).filter(|&i| m[i as usize].2).collect();
            each(self)?;
        }
        Ok(())
    }

    /// Decodes one token for each of several sequences in one batch:
    /// `steps[i] = (token, position, sequence)`, sequences distinct. Every
    /// row keeps its logits: row `i` is [`Self::logits_ith`]`(i)`.
    pub fn decode_step(&mut self, steps: &[(i32, usize, usize)]) -> Result<()> {
        if steps.is_empty() || steps.len() > self.n_batch {
            return Err(Error::InvalidArgument(format!(
                "{} rows in a step (1..={} allowed)",
                steps.len(),
                self.n_batch
            )));
        }
        let mut seen = vec![false; self.n_seq_max];
        let mut rows = Vec::with_capacity(steps.len());
        for &(tok, pos, seq) in steps {
            self.check_tokens(&[tok])?;
            let s = self.check_seq(seq)?;
            if std::mem::replace(&mut seen[seq], true) {
                return Err(Error::InvalidArgument(format!(
                    "sequence {seq} appears twice in one step"
                )));
            }
            rows.push((tok, self.check_range(pos, 1)?, s));
        }
        self.out_rows.clear();
        let mut batch = Batch::new(rows.len(), 0)?;
        let toks: Vec<i32> = rows.iter().map(|r| r.0).collect();
        batch.set_tokens(&toks);
        batch.fill_rows(rows.len(), |i| (rows[i].1, rows[i].2, true));
        self.decode(&batch)?;
        self.out_rows = (0..rows.len() as i32).collect();
        Ok(())
    }

    /// The logits (n_vocab floats) of the last row of the last decode,
    /// which must have produced logits.
    pub fn logits_last(&mut self) -> Result<&[f32]> {
        match self.out_rows.len() {
            0 => Err(Error::InvalidArgument(
                "the last decode produced no logits".into(),
            )),
            n => self.logits_ith(n - 1),
        }
    }

    /// The logits of output row `i` of the last decode (rows are counted
    /// among those that asked for logits, in batch order).
    pub fn logits_ith(&mut self, i: usize) -> Result<&[f32]> {
        let Some(&row) = self.out_rows.get(i) else {
            return Err(Error::InvalidArgument(format!(
                "logits row {i} does not exist (the last decode produced {})",
                self.out_rows.len()
            )));
        };
        // SAFETY: valid context; `row` is a batch row that the last decode
        // flagged for output (or -1, its last output), as recorded in
        // `out_rows`; llama.cpp returns null on failure (checked).
        let p = unsafe { ffi::llama_get_logits_ith(self.ptr.as_ptr(), row) };
        if p.is_null() {
            return Err(Error::Backend(with_detail(
                "llama.cpp returned no logits".into(),
            )));
        }
        // SAFETY: the row holds n_vocab floats owned by the context; the
        // slice borrows `self` mutably, so no decode can overwrite it while
        // it is alive.
        Ok(unsafe { std::slice::from_raw_parts(p, self.model.n_vocab()) })
    }
}
