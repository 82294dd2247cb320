//! Prefill (text tokens and spliced image embeddings) and token-by-token
//! generation with streaming of complete UTF-8 text.
//!
//! The reference's output text is `sp.decode(new ids, skip specials).strip()`.
//! We stream the same text: each token's bytes (`token_to_piece`, control
//! tokens render as nothing) go through [`Utf8Stream`] (complete characters
//! only, invalid bytes become U+FFFD) and [`TrimStream`] (leading whitespace
//! dropped, trailing whitespace held back until something follows it), so
//! the concatenation of the streamed pieces is exactly [`Generation::text`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::prompt::PromptPiece;
use crate::error::{Error, Result};
use crate::sys::llama::{LlamaContext, LlamaModel, Sampler, SamplerParams};

/// Generation settings. Defaults are the reference's (`get_description`:
/// temperature 0.2, top_p 0.5, at most 512 new tokens; top_k 50 is the
/// Hugging Face generation default).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// <= 0: greedy, deterministic.
    pub temperature: f32,
    pub top_p: f32,
    /// <= 0: off.
    pub top_k: i32,
    /// Seed of the random draw (ignored when greedy).
    pub seed: u32,
    /// Keep the logits of every generated position.
    pub collect_logits: bool,
    /// Never stop at an end-of-generation token: a sampled one is masked
    /// and drawn again, so exactly `max_new_tokens` come (unless the context
    /// fills or the callback stops). For benchmarks and load tests that
    /// need fixed-length answers (llama.cpp's and vLLM's `ignore_eos`).
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 512,
            temperature: 0.2,
            top_p: 0.5,
            top_k: 50,
            seed: 0,
            collect_logits: false,
            ignore_eos: false,
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding (temperature 0) with the other defaults.
    pub fn greedy() -> Self {
        GenerateOptions {
            temperature: 0.0,
            ..Default::default()
        }
    }

    fn sampler_params(&self) -> SamplerParams {
        SamplerParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// An end-of-generation token (EOS) was sampled.
    Eos,
    /// `max_new_tokens` tokens were generated.
    MaxTokens,
    /// The streaming callback returned false.
    Callback,
    /// The context window is full.
    ContextFull,
}

/// Wall-clock timings and counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
    /// Prefill (prompt) time, including the first logits. The prompts of
    /// one [`generate_many`] wave are prefilled together: each reports its
    /// share of the wave's time (by prompt length), so shares add up.
    pub prefill_ms: f64,
    /// Sampling + single-token decodes after the prefill.
    pub decode_ms: f64,
    /// Positions in the prompt (text tokens + image rows).
    pub n_prompt_tokens: usize,
    /// Single-token decode steps run (one fewer than the generated tokens
    /// unless generation stopped early: the first token comes from the
    /// prefill logits, the last one is not fed back).
    pub n_decoded: usize,
}

impl Timings {
    /// Decode steps per second (0 if none ran).
    pub fn decode_tokens_per_s(&self) -> f64 {
        steps_per_s(self.n_decoded, self.decode_ms)
    }
}

/// `n` steps in `ms` milliseconds as steps per second (0 if none ran).
pub fn steps_per_s(n: usize, ms: f64) -> f64 {
    if n == 0 || ms <= 0.0 {
        0.0
    } else {
        n as f64 * 1e3 / ms
    }
}

/// The result of a generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The new token ids, including the final EOS if one was sampled (like
    /// the reference's `output_ids`).
    pub tokens: Vec<i32>,
    /// The streamed text, which equals the reference's
    /// `decode(tokens, skip_special_tokens).strip()`.
    pub text: String,
    pub stopped_by_eos: bool,
    pub stop_reason: StopReason,
    /// Logits at the last prompt position (empty unless `collect_logits`).
    pub first_logits: Vec<f32>,
    /// Logits that chose each generated token (row 0 = `first_logits`;
    /// empty unless `collect_logits`).
    pub step_logits: Vec<Vec<f32>>,
    /// Positions in the prompt.
    pub prompt_len: usize,
    pub timings: Timings,
}

// ---------------------------------------------------------------- streaming text

/// Turns a stream of byte pieces into complete UTF-8 text. Incomplete
/// multi-byte sequences are held until they complete; each maximal invalid
/// subsequence becomes one U+FFFD (the WHATWG / `String::from_utf8_lossy`
/// rule).
#[derive(Clone, Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the text that is now complete (maybe empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by the error's contract.
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[start..start + valid],
                    ));
                    start += valid;
                    match e.error_len() {
                        // Incomplete sequence at the end: wait for more bytes.
                        None => break,
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start += n;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Ends the stream: an unfinished sequence becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Python's `str.isspace()` (what the reference's `strip()` removes):
/// Unicode White_Space plus the separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Strips a text stream like Python's `strip()` without looking ahead:
/// leading whitespace is dropped, trailing whitespace is held back and
/// released only when non-whitespace follows it.
#[derive(Clone, Debug, Default)]
pub struct TrimStream {
    started: bool,
    held: String,
}

impl TrimStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds text; returns what can be emitted now (maybe empty).
    pub fn push(&mut self, text: &str) -> String {
        let text = if self.started {
            text
        } else {
            text.trim_start_matches(is_py_space)
        };
        let body = text.trim_end_matches(is_py_space);
        if body.is_empty() {
            if self.started {
                self.held.push_str(text);
            }
            return String::new();
        }
        self.started = true;
        let mut out = std::mem::take(&mut self.held);
        out.push_str(body);
        self.held.push_str(&text[body.len()..]);
        out
    }
}

/// Bytes in, stripped complete text out.
#[derive(Clone, Debug, Default)]
pub struct TextStream {
    utf8: Utf8Stream,
    trim: TrimStream,
}

impl TextStream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) -> String {
        let s = self.utf8.push(bytes);
        if s.is_empty() {
            return s;
        }
        self.trim.push(&s)
    }

    /// Flushes an unfinished UTF-8 sequence (as U+FFFD); trailing
    /// whitespace is dropped.
    pub fn finish(&mut self) -> String {
        let s = self.utf8.finish();
        if s.is_empty() {
            return s;
        }
        self.trim.push(&s)
    }
}

// ---------------------------------------------------------------- prefill

fn check_model(ctx: &LlamaContext, model: &LlamaModel) -> Result<()> {
    if std::ptr::eq(&**ctx.model(), model) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "the context belongs to a different model".into(),
        ))
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A prompt's length in positions: its tokens, and `rows(i)` for image `i`.
pub fn prompt_len(
    pieces: &[PromptPiece],
    mut rows: impl FnMut(usize) -> Result<usize>,
) -> Result<usize> {
    pieces.iter().try_fold(0usize, |len, p| {
        let n = match p {
            PromptPiece::Tokens(t) => t.len(),
            PromptPiece::Image(i) => rows(*i)?,
        };
        Ok(len.saturating_add(n))
    })
}

/// Validates pieces against images; returns the prompt length in positions.
fn check_pieces(model: &LlamaModel, pieces: &[PromptPiece], images: &[&[f32]]) -> Result<usize> {
    let n_embd = model.n_embd();
    let mut used = vec![false; images.len()];
    let len = prompt_len(pieces, |i| {
        let img = images.get(i).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "prompt refers to image {i} but {} were given",
                images.len()
            ))
        })?;
        if img.is_empty() || img.len() % n_embd != 0 {
            return Err(Error::InvalidArgument(format!(
                "image {i}: {} floats is not a non-empty multiple of n_embd = {n_embd}",
                img.len()
            )));
        }
        used[i] = true;
        Ok(img.len() / n_embd)
    })?;
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(Error::InvalidArgument(format!(
            "image {i} is not used by the prompt"
        )));
    }
    if len == 0 {
        return Err(Error::InvalidArgument("empty prompt".into()));
    }
    Ok(len)
}

/// Clears the KV cache and decodes the prompt pieces at positions 0..L-1
/// (text as token ids, images as embedding rows), keeping the logits of the
/// last position. Returns L.
pub fn prefill(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    pieces: &[PromptPiece],
    images: &[&[f32]],
) -> Result<usize> {
    check_model(ctx, model)?;
    ctx.clear();
    prefill_seq(ctx, model, pieces, images, 0)
}

/// Decodes the prompt pieces of sequence `seq` at its positions 0..L-1
/// (its cells must be empty) as one run of embedding rows, keeping the
/// logits of the last position. Returns L.
fn prefill_seq(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    pieces: &[PromptPiece],
    images: &[&[f32]],
    seq: usize,
) -> Result<usize> {
    let rows = prompt_rows(ctx, model, pieces, images)?;
    ctx.decode_embd_seq(&rows, 0, seq, true)?;
    Ok(rows.len() / model.n_embd())
}

/// The input rows of a prompt (`L * n_embd` floats): each text token's
/// embedding row, image `k` as `images[k]`, in prompt order. One run of
/// rows decodes in one llama_decode (per `n_batch` rows), as the
/// reference's spliced `inputs_embeds` does, instead of one per piece; it
/// also keeps every matrix product of the prompt a wide one (GPU backends
/// pick lower-precision kernels for narrow ones).
fn prompt_rows(
    ctx: &LlamaContext,
    model: &LlamaModel,
    pieces: &[PromptPiece],
    images: &[&[f32]],
) -> Result<Vec<f32>> {
    let len = check_pieces(model, pieces, images)?;
    if len > ctx.n_ctx() {
        return Err(Error::ContextOverflow(format!(
            "the prompt has {len} positions, the context {}",
            ctx.n_ctx()
        )));
    }
    let mut rows = Vec::with_capacity(len * model.n_embd());
    for p in pieces {
        match p {
            PromptPiece::Tokens(t) => model.embed_tokens(t, &mut rows)?,
            // Index checked by check_pieces.
            PromptPiece::Image(k) => rows.extend_from_slice(images[*k]),
        }
    }
    Ok(rows)
}

/// Clears the KV cache and decodes a whole precomputed input sequence
/// (`L * n_embd` floats, e.g. the reference's `llm_inputs_embeds`) at
/// positions 0..L-1, keeping the logits of the last position. Returns L.
pub fn prefill_embeddings(ctx: &mut LlamaContext, embeds: &[f32]) -> Result<usize> {
    let n_embd = ctx.model().n_embd();
    if embeds.is_empty() || embeds.len() % n_embd != 0 {
        return Err(Error::InvalidArgument(format!(
            "{} floats is not a non-empty multiple of n_embd = {n_embd}",
            embeds.len()
        )));
    }
    let len = embeds.len() / n_embd;
    if len > ctx.n_ctx() {
        return Err(Error::ContextOverflow(format!(
            "the prompt has {len} positions, the context {}",
            ctx.n_ctx()
        )));
    }
    ctx.clear();
    ctx.decode_embd(embeds, 0, true)?;
    Ok(len)
}

// ---------------------------------------------------------------- generation

/// Generates a description: prefill `pieces` (image `k` = `images[k]`,
/// T * n_embd floats), then sample until EOS, `max_new_tokens`, the
/// callback returning false, or a full context. `on_piece` receives each
/// newly complete piece of text (never empty). `cancel` is checked between
/// tokens and, through llama.cpp's abort callback, inside every graph
/// compute; setting it gives `Err(Cancelled)`.
pub fn generate(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    pieces: &[PromptPiece],
    images: &[&[f32]],
    opts: &GenerateOptions,
    on_piece: &mut dyn FnMut(&str) -> bool,
    cancel: &AtomicBool,
) -> Result<Generation> {
    check_model(ctx, model)?;
    generate_one(ctx, model, opts, on_piece, cancel, |ctx| {
        prefill(ctx, model, pieces, images)
    })
}

/// [`generate`] from a whole precomputed input sequence (`L * n_embd`
/// floats; see [`prefill_embeddings`]).
pub fn generate_from_embeddings(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    embeds: &[f32],
    opts: &GenerateOptions,
    on_piece: &mut dyn FnMut(&str) -> bool,
    cancel: &AtomicBool,
) -> Result<Generation> {
    check_model(ctx, model)?;
    generate_one(ctx, model, opts, on_piece, cancel, |ctx| {
        prefill_embeddings(ctx, embeds)
    })
}

/// One sequence: `prefill` fills the cache (returning the prompt length),
/// then tokens are sampled and fed back one at a time.
fn generate_one(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    opts: &GenerateOptions,
    on_piece: &mut dyn FnMut(&str) -> bool,
    cancel: &AtomicBool,
    prefill: impl FnOnce(&mut LlamaContext) -> Result<usize>,
) -> Result<Generation> {
    let sampler = Sampler::new(&opts.sampler_params())?;
    ctx.with_abort_flag(cancel, |ctx| {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let t0 = Instant::now();
        let len = prefill(ctx)?;
        let mut seq = SeqState::new(sampler, len, ms_since(t0));
        let n_ctx = ctx.n_ctx();
        let t1 = Instant::now();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let logits = ctx.logits_last()?;
            let Some((tok, pos)) = seq.step(logits, model, opts, n_ctx, on_piece)? else {
                break;
            };
            ctx.decode_tokens(&[tok], pos, true)?;
            seq.n_decoded += 1;
        }
        Ok(seq.finish(ms_since(t1), on_piece))
    })
}

/// A prompt of [`generate_many`]: pieces, the images they refer to, and
/// how to answer it (each prompt its own length and sampling).
#[derive(Clone, Copy, Debug)]
pub struct Prompt<'a> {
    pub pieces: &'a [PromptPiece],
    pub images: &'a [&'a [f32]],
    pub opts: &'a GenerateOptions,
}

/// Generates one description per prompt, decoding the sequences in
/// parallel: each prompt is prefilled as its own sequence of the context,
/// then every step decodes one token of each unfinished sequence in one
/// batch (the weights are read once per step for all of them). Each
/// sequence has its own sampler, seeded with its prompt's `opts.seed`, and
/// stops by its own options, so the result of each prompt is that of a
/// [`generate`] call alone. Prompts that do not
/// fit together (more than the context's sequences, or more cells than
/// `n_ctx`) run in consecutive waves. `on_piece(k, text)` streams prompt
/// `k`'s text; returning false stops that prompt only.
pub fn generate_many(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    prompts: &[Prompt],
    on_piece: &mut dyn FnMut(usize, &str) -> bool,
    cancel: &AtomicBool,
) -> Result<Vec<Generation>> {
    check_model(ctx, model)?;
    let mut needs = Vec::with_capacity(prompts.len());
    for (k, p) in prompts.iter().enumerate() {
        let len = check_pieces(model, p.pieces, p.images).map_err(|e| prompt_err(k, e))?;
        if len > ctx.n_ctx() {
            return Err(Error::ContextOverflow(format!(
                "prompt {k} has {len} positions, the context {}",
                ctx.n_ctx()
            )));
        }
        needs.push(cells_of(len, p.opts.max_new_tokens, ctx.n_ctx()));
    }
    let waves = plan_waves(&needs, ctx.n_ctx(), ctx.n_seq_max());
    let mut out = Vec::with_capacity(prompts.len());
    ctx.with_abort_flag(cancel, |ctx| -> Result<()> {
        for wave in waves {
            let first = wave.start;
            let seqs = run_wave(
                ctx,
                model,
                &prompts[wave],
                &mut |j, s| on_piece(first + j, s),
                cancel,
            )?;
            out.extend(seqs);
        }
        Ok(())
    })?;
    Ok(out)
}

fn prompt_err(k: usize, e: Error) -> Error {
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("prompt {k}: {m}")),
        e => e,
    }
}

/// KV cells one call needs to run its prompts as one wave: each prompt's
/// positions plus its answer, for at most `n_seq` prompts (the longest).
/// An invalid prompt counts 0: its error comes from the generation.
pub fn cells_needed(prompts: &[Prompt], model: &LlamaModel, n_seq: usize) -> usize {
    let mut need: Vec<usize> = prompts
        .iter()
        .map(|p| {
            let len = check_pieces(model, p.pieces, p.images).unwrap_or(0);
            len.saturating_add(p.opts.max_new_tokens)
        })
        .collect();
    need.sort_unstable_by(|a, b| b.cmp(a));
    need.iter()
        .take(n_seq.max(1))
        .fold(0, |a, &b| a.saturating_add(b))
}

/// The cells a sequence may fill: its prompt plus the tokens it may feed
/// back (capped at `n_ctx`: a sequence that alone would overflow runs
/// alone, exactly as in a single call, and stops when the context is full).
fn cells_of(prompt_len: usize, max_new: usize, n_ctx: usize) -> usize {
    prompt_len
        .saturating_add(max_new.saturating_sub(1))
        .min(n_ctx)
}

/// Splits prompts (in order) into waves that fit the context together:
/// at most `n_seq` sequences, and at most `n_ctx` cells, counting each
/// sequence's `cells_of` (`needs`).
pub fn plan_waves(needs: &[usize], n_ctx: usize, n_seq: usize) -> Vec<std::ops::Range<usize>> {
    let mut waves = Vec::new();
    let (mut start, mut cells) = (0usize, 0usize);
    for (k, &need) in needs.iter().enumerate() {
        if k > start && (k - start >= n_seq.max(1) || cells + need > n_ctx) {
            waves.push(start..k);
            (start, cells) = (k, 0);
        }
        cells += need;
    }
    if start < needs.len() {
        waves.push(start..needs.len());
    }
    waves
}

/// Prefills the prompts together, prompt j as sequence j (its index in
/// the wave), then decodes all unfinished sequences one token per step.
fn run_wave(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    prompts: &[Prompt],
    on_piece: &mut dyn FnMut(usize, &str) -> bool,
    cancel: &AtomicBool,
) -> Result<Vec<Generation>> {
    ctx.clear();
    let n_ctx = ctx.n_ctx();
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    let t0 = Instant::now();
    let rows = prompts
        .iter()
        .map(|p| prompt_rows(ctx, model, p.pieces, p.images))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
    // The whole wave in one run of batches: the weights are read once per
    // batch for all prompts, not once per prompt.
    let first_logits = ctx.decode_embd_seqs(&refs)?;
    let prefill_ms = ms_since(t0);
    let mut seqs = Vec::with_capacity(prompts.len());
    // Pending feed-back (token, position) per sequence; None = finished.
    let mut next = Vec::with_capacity(prompts.len());
    let total_rows: usize = rows.iter().map(Vec::len).sum();
    for (j, logits) in first_logits.iter().enumerate() {
        let len = rows[j].len() / model.n_embd();
        let share = prefill_ms * rows[j].len() as f64 / total_rows.max(1) as f64;
        let opts = prompts[j].opts;
        let mut seq = SeqState::new(Sampler::new(&opts.sampler_params())?, len, share);
        next.push(seq.step(logits, model, opts, n_ctx, &mut |s| on_piece(j, s))?);
        seqs.push(seq);
    }
    let t1 = Instant::now();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let active: Vec<usize> = (0..seqs.len()).filter(|&j| next[j].is_some()).collect();
        let steps: Vec<(i32, usize, usize)> = active
            .iter()
            .filter_map(|&j| next[j].map(|(tok, pos)| (tok, pos, j)))
            .collect();
        if steps.is_empty() {
            break;
        }
        ctx.decode_step(&steps)?;
        for (i, &j) in active.iter().enumerate() {
            seqs[j].n_decoded += 1;
            let logits = ctx.logits_ith(i)?;
            let opts = prompts[j].opts;
            next[j] = seqs[j].step(logits, model, opts, n_ctx, &mut |s| on_piece(j, s))?;
        }
    }
    let decode_ms = ms_since(t1);
    Ok(seqs
        .into_iter()
        .enumerate()
        .map(|(j, s)| s.finish(decode_ms, &mut |t| on_piece(j, t)))
        .collect())
}

/// The state of one sequence's generation after its prefill.
struct SeqState {
    sampler: Sampler,
    tokens: Vec<i32>,
    text: String,
    stream: TextStream,
    step_logits: Vec<Vec<f32>>,
    /// Tokens fed back so far (the next one goes at `prompt_len + n_decoded`).
    n_decoded: usize,
    stop: StopReason,
    prompt_len: usize,
    prefill_ms: f64,
}

impl SeqState {
    fn new(sampler: Sampler, prompt_len: usize, prefill_ms: f64) -> Self {
        SeqState {
            sampler,
            tokens: Vec::new(),
            text: String::new(),
            stream: TextStream::new(),
            step_logits: Vec::new(),
            n_decoded: 0,
            stop: StopReason::MaxTokens,
            prompt_len,
            prefill_ms,
        }
    }

    /// Samples the next token from `logits` (the sequence's last position)
    /// and streams its text. Returns the token and the position to feed it
    /// back at, or None when the sequence is finished.
    fn step(
        &mut self,
        logits: &[f32],
        model: &LlamaModel,
        opts: &GenerateOptions,
        n_ctx: usize,
        on_piece: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<(i32, usize)>> {
        if opts.collect_logits {
            self.step_logits.push(logits.to_vec());
        }
        let mut tok = self.sampler.sample_logits(logits)?;
        if opts.ignore_eos && model.is_eog(tok) {
            tok = Self::draw_without_eog(&mut self.sampler, logits, tok, model)?;
        }
        self.tokens.push(tok);
        if model.is_eog(tok) {
            self.stop = StopReason::Eos;
            return Ok(None);
        }
        let piece = self.stream.push(&model.token_to_piece(tok));
        if !piece.is_empty() {
            self.text.push_str(&piece);
            if !on_piece(&piece) {
                self.stop = StopReason::Callback;
                return Ok(None);
            }
        }
        if self.tokens.len() >= opts.max_new_tokens {
            return Ok(None);
        }
        let pos = self.prompt_len + self.n_decoded;
        if pos >= n_ctx {
            self.stop = StopReason::ContextFull;
            return Ok(None);
        }
        Ok(Some((tok, pos)))
    }

    /// Draws again with every end-of-generation token drawn so far masked
    /// out (`ignore_eos`); a vocabulary of nothing but such tokens is an error.
    fn draw_without_eog(
        sampler: &mut Sampler,
        logits: &[f32],
        mut tok: i32,
        model: &LlamaModel,
    ) -> Result<i32> {
        let mut masked = logits.to_vec();
        while model.is_eog(tok) {
            match usize::try_from(tok).ok().and_then(|i| masked.get_mut(i)) {
                Some(l) if *l != f32::NEG_INFINITY => *l = f32::NEG_INFINITY,
                _ => {
                    return Err(Error::Backend(
                        "ignore_eos: no token but end-of-generation ones is left to sample".into(),
                    ))
                }
            }
            tok = sampler.sample_logits(&masked)?;
        }
        Ok(tok)
    }

    /// Flushes the text stream and builds the result.
    fn finish(mut self, decode_ms: f64, on_piece: &mut dyn FnMut(&str) -> bool) -> Generation {
        if self.stop != StopReason::Callback {
            // The caller has stopped listening after a `false`.
            let rest = self.stream.finish();
            if !rest.is_empty() {
                self.text.push_str(&rest);
                let _ = on_piece(&rest);
            }
        }
        Generation {
            first_logits: self.step_logits.first().cloned().unwrap_or_default(),
            step_logits: self.step_logits,
            stopped_by_eos: self.stop == StopReason::Eos,
            stop_reason: self.stop,
            tokens: self.tokens,
            text: self.text,
            prompt_len: self.prompt_len,
            timings: Timings {
                prefill_ms: self.prefill_ms,
                decode_ms,
                n_prompt_tokens: self.prompt_len,
                n_decoded: self.n_decoded,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_all(pieces: &[&[u8]]) -> (Vec<String>, String) {
        let mut s = TextStream::new();
        let mut out = Vec::new();
        for p in pieces {
            let t = s.push(p);
            if !t.is_empty() {
                out.push(t);
            }
        }
        let t = s.finish();
        if !t.is_empty() {
            out.push(t);
        }
        let joined = out.concat();
        (out, joined)
    }

    #[test]
    fn three_byte_char_over_three_tokens() {
        let euro = "€".as_bytes(); // E2 82 AC
        let mut u = Utf8Stream::new();
        assert_eq!(u.push(&euro[..1]), "");
        assert_eq!(u.push(&euro[1..2]), "");
        assert_eq!(u.push(&euro[2..]), "€");
        assert_eq!(u.finish(), "");
        let (pieces, text) = stream_all(&[b" a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(pieces, vec!["a", "€", "b"]);
        assert_eq!(text, "a€b");
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut u = Utf8Stream::new();
        assert_eq!(u.push(&[0xB3]), "\u{FFFD}");
        assert_eq!(u.push(b"Q"), "Q");
        assert_eq!(u.push(&[0xD4]), ""); // could start a 2-byte char
        assert_eq!(u.push(b" r"), "\u{FFFD} r");
        assert_eq!(u.push(&[0xCC]), "");
        assert_eq!(u.push(&[0x92]), "\u{312}");
        assert_eq!(u.push(&[0xE9]), "");
        assert_eq!(u.finish(), "\u{FFFD}");
        // Same as the lossy decoding of the whole byte string.
        let all: Vec<u8> = [&[0xB3][..], b"Q", &[0xD4], b" r", &[0xCC, 0x92], &[0xE9]].concat();
        assert_eq!(
            String::from_utf8_lossy(&all),
            "\u{FFFD}Q\u{FFFD} r\u{312}\u{FFFD}"
        );
    }

    #[test]
    fn trimming_like_python_strip() {
        let (_, t) = stream_all(&[b" i", b" bottle", b"\x0b", b"J", b" ", b"\n"]);
        assert_eq!(t, "i bottle\x0bJ");
        let (_, t) = stream_all(&[b"\x19", b";", b" j"]);
        assert_eq!(t, "\x19; j");
        let (_, t) = stream_all(&[b"  ", b"\n"]);
        assert_eq!(t, "");
        let (_, t) = stream_all(&[b"\x1c", b"x", b"\x1f"]);
        assert_eq!(t, "x");
    }

    #[test]
    fn waves_respect_sequences_and_cells() {
        let waves = |lens: &[usize], max_new: &[usize], n_ctx, n_seq| {
            let needs: Vec<usize> = lens
                .iter()
                .zip(max_new.iter().cycle())
                .map(|(&l, &m)| cells_of(l, m, n_ctx))
                .collect();
            plan_waves(&needs, n_ctx, n_seq)
        };
        // Four prompts of 100 positions, 51 new tokens: 150 cells each.
        assert_eq!(waves(&[100; 4], &[51], 1000, 4), vec![0..4]);
        assert_eq!(waves(&[100; 4], &[51], 1000, 3), vec![0..3, 3..4]);
        assert_eq!(waves(&[100; 4], &[51], 300, 4), vec![0..2, 2..4]);
        assert_eq!(
            waves(&[100; 4], &[51], 299, 4),
            vec![0..1, 1..2, 2..3, 3..4]
        );
        // A prompt that cannot finish within the context runs alone.
        assert_eq!(waves(&[10, 290, 10], &[51], 300, 4), vec![0..1, 1..2, 2..3]);
        assert_eq!(
            waves(&[], &[51], 300, 4),
            Vec::<std::ops::Range<usize>>::new()
        );
        // Each prompt by its own length: 150 + 110 + 150 cells.
        assert_eq!(waves(&[100; 3], &[51, 11], 300, 4), vec![0..2, 2..3]);
        assert_eq!(waves(&[100; 3], &[51, 11], 410, 4), vec![0..3]);
    }

    #[test]
    fn options_defaults() {
        let o = GenerateOptions::default();
        assert_eq!(o.max_new_tokens, 512);
        assert_eq!(o.temperature, 0.2);
        assert_eq!(o.top_p, 0.5);
        assert_eq!(o.top_k, 50);
        assert!(!o.collect_logits);
        assert_eq!(GenerateOptions::greedy().temperature, 0.0);
    }
}
