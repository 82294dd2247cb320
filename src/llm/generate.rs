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
    /// Prefill (prompt) time, including the first logits.
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
        if self.n_decoded == 0 || self.decode_ms <= 0.0 {
            0.0
        } else {
            self.n_decoded as f64 / (self.decode_ms / 1000.0)
        }
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

/// Validates pieces against images; returns the prompt length in positions.
fn check_pieces(model: &LlamaModel, pieces: &[PromptPiece], images: &[&[f32]]) -> Result<usize> {
    let n_embd = model.n_embd();
    let mut used = vec![false; images.len()];
    let mut len = 0usize;
    for p in pieces {
        let n = match p {
            PromptPiece::Tokens(t) => t.len(),
            PromptPiece::Image(i) => {
                let img = images.get(*i).ok_or_else(|| {
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
                used[*i] = true;
                img.len() / n_embd
            }
        };
        len = len.saturating_add(n);
    }
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
    let len = check_pieces(model, pieces, images)?;
    if len > ctx.n_ctx() {
        return Err(Error::ContextOverflow(format!(
            "the prompt has {len} positions, the context {}",
            ctx.n_ctx()
        )));
    }
    ctx.clear();
    let last = pieces
        .iter()
        .rposition(|p| !matches!(p, PromptPiece::Tokens(t) if t.is_empty()))
        .unwrap_or(0);
    let mut pos = 0usize;
    for (i, p) in pieces.iter().enumerate() {
        let logits = i == last;
        match p {
            PromptPiece::Tokens(t) if t.is_empty() => {}
            PromptPiece::Tokens(t) => {
                ctx.decode_tokens(t, pos, logits)?;
                pos += t.len();
            }
            PromptPiece::Image(k) => {
                let img = images[*k]; // index checked by check_pieces
                ctx.decode_embd(img, pos, logits)?;
                pos += img.len() / model.n_embd();
            }
        }
    }
    Ok(pos)
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
    let mut sampler = Sampler::new(&opts.sampler_params())?;
    ctx.with_abort_flag(cancel, |ctx| {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let t0 = Instant::now();
        let len = prefill(ctx, model, pieces, images)?;
        let prefill_ms = ms_since(t0);
        decode_loop(
            ctx,
            model,
            &mut sampler,
            len,
            prefill_ms,
            opts,
            on_piece,
            cancel,
        )
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
    let mut sampler = Sampler::new(&opts.sampler_params())?;
    ctx.with_abort_flag(cancel, |ctx| {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let t0 = Instant::now();
        let len = prefill_embeddings(ctx, embeds)?;
        let prefill_ms = ms_since(t0);
        decode_loop(
            ctx,
            model,
            &mut sampler,
            len,
            prefill_ms,
            opts,
            on_piece,
            cancel,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn decode_loop(
    ctx: &mut LlamaContext,
    model: &LlamaModel,
    sampler: &mut Sampler,
    prompt_len: usize,
    prefill_ms: f64,
    opts: &GenerateOptions,
    on_piece: &mut dyn FnMut(&str) -> bool,
    cancel: &AtomicBool,
) -> Result<Generation> {
    let t0 = Instant::now();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut stream = TextStream::new();
    let mut step_logits = Vec::new();
    let mut n_decoded = 0usize;
    let mut stop = StopReason::MaxTokens;
    let mut emit = |s: String, text: &mut String| -> bool {
        if s.is_empty() {
            return true;
        }
        text.push_str(&s);
        on_piece(&s)
    };
    for step in 0..opts.max_new_tokens {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let logits = ctx.logits_last()?;
        if opts.collect_logits {
            step_logits.push(logits.to_vec());
        }
        let tok = sampler.sample_logits(logits)?;
        tokens.push(tok);
        if model.is_eog(tok) {
            stop = StopReason::Eos;
            break;
        }
        if !emit(stream.push(&model.token_to_piece(tok)), &mut text) {
            stop = StopReason::Callback;
            break;
        }
        if step + 1 == opts.max_new_tokens {
            break;
        }
        let pos = prompt_len + n_decoded;
        if pos >= ctx.n_ctx() {
            stop = StopReason::ContextFull;
            break;
        }
        ctx.decode_tokens(&[tok], pos, true)?;
        n_decoded += 1;
    }
    if stop != StopReason::Callback {
        // The caller has stopped listening after a `false`.
        let _ = emit(stream.finish(), &mut text);
    }
    let decode_ms = ms_since(t0);
    Ok(Generation {
        first_logits: step_logits.first().cloned().unwrap_or_default(),
        step_logits,
        stopped_by_eos: stop == StopReason::Eos,
        stop_reason: stop,
        tokens,
        text,
        prompt_len,
        timings: Timings {
            prefill_ms,
            decode_ms,
            n_prompt_tokens: prompt_len,
            n_decoded,
        },
    })
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
