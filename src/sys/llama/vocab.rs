//! The vocabulary: llama.cpp's tokenizer and token texts, and the token
//! embedding table read from the file.

use std::ffi::{c_char, CStr};
use std::path::Path;

use super::super::types::{dequantize, GgmlType};
use super::super::MappedFile;
use super::logging::with_detail;
use super::model::LlamaModel;
use super::{c_len, ffi};
use crate::error::{Error, Result};
use crate::gguf_file::{GgufHeader, TensorInfo};

/// The token embedding table (`token_embd.weight`) read from the mapped
/// GGUF file. llama.cpp keeps it private, but a prompt that mixes text and
/// image rows can only go into one llama_decode as embedding rows.
pub struct TokenTable {
    file: MappedFile,
    /// Byte offset of row 0 in the file.
    offset: usize,
    row_bytes: usize,
    ty: GgmlType,
    /// ggml shape [n_embd, n_vocab].
    ne: Vec<u64>,
}

impl TokenTable {
    /// The table `t` of a mapped file whose header (`t` from it) has been
    /// parsed, so that offset + size lie in the file.
    pub fn new(file: MappedFile, t: &TensorInfo) -> Result<TokenTable> {
        let row_bytes =
            t.ne.first()
                .and_then(|&n| t.ty.row_size(n))
                .ok_or_else(|| Error::InvalidModel(format!("{} has a bad row size", t.name)))?;
        Ok(TokenTable {
            offset: t.offset as usize,
            row_bytes: row_bytes as usize,
            ty: t.ty,
            ne: t.ne.clone(),
            file,
        })
    }

    /// Maps and parses `path` and finds the table.
    pub(super) fn open(path: &Path) -> Result<TokenTable> {
        let file = MappedFile::open(path)?;
        let what = path.display().to_string();
        let h = GgufHeader::parse(file.bytes(), &what)?;
        let t = h
            .tensor("token_embd.weight")
            .ok_or_else(|| Error::InvalidModel(format!("{what}: no token_embd.weight tensor")))?;
        Self::new(file, t).map_err(|e| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{what}: {m}")),
            e => e,
        })
    }

    /// The table must be `n_embd` x `n_vocab` (llama.cpp's sizes).
    pub(super) fn check(self, what: &Path, n_embd: usize, n_vocab: usize) -> Result<TokenTable> {
        if n_vocab == 0 || n_embd == 0 {
            return Err(Error::InvalidModel(format!(
                "{}: model has no vocabulary or zero width",
                what.display()
            )));
        }
        if self.ne != [n_embd as u64, n_vocab as u64] {
            return Err(Error::InvalidModel(format!(
                "{}: token_embd.weight is {:?}, not [{n_embd}, {n_vocab}]",
                what.display(),
                self.ne
            )));
        }
        Ok(self)
    }

    /// Row `id` as f32 (ggml's `to_float`, the values llama.cpp's
    /// `get_rows` gives); `id` must be in range.
    fn row(&self, id: usize, n_embd: usize) -> Result<Vec<f32>> {
        let start = self.offset + id * self.row_bytes;
        dequantize(
            self.ty,
            &self.file.bytes()[start..start + self.row_bytes],
            n_embd,
        )
    }
}

impl LlamaModel {
    /// Appends the input embedding rows of `ids` ([`Self::n_embd`] floats
    /// each, the rows llama.cpp looks up for token input) to `out`.
    pub fn embed_tokens(&self, ids: &[i32], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(ids.len() * self.n_embd);
        for &id in ids {
            let i = self.tok_opt(id).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "token id {id} outside the vocabulary (0..{})",
                    self.n_vocab
                ))
            })?;
            out.extend(self.tokens.row(i as usize, self.n_embd)?);
        }
        Ok(())
    }

    fn tok_opt(&self, t: i32) -> Option<i32> {
        (t >= 0 && (t as usize) < self.n_vocab).then_some(t)
    }

    /// Beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<i32> {
        // SAFETY: valid vocab pointer; pure getter.
        self.tok_opt(unsafe { ffi::llama_vocab_bos(self.vocab()) })
    }

    /// End-of-sequence token, if the vocabulary has one.
    pub fn eos(&self) -> Option<i32> {
        // SAFETY: valid vocab pointer; pure getter.
        self.tok_opt(unsafe { ffi::llama_vocab_eos(self.vocab()) })
    }

    /// Whether `tok` ends generation (EOS, EOT, ...). False for ids outside
    /// the vocabulary.
    pub fn is_eog(&self, tok: i32) -> bool {
        if self.tok_opt(tok).is_none() {
            return false;
        }
        // SAFETY: valid vocab pointer, token id checked to be in range.
        unsafe { ffi::llama_vocab_is_eog(self.vocab(), tok) }
    }

    /// Tokenises `text` with llama.cpp's tokenizer (for this model the
    /// SentencePiece one, which prepends the dummy-prefix space to `text`).
    /// `add_bos` prepends the BOS token (regardless of the file's
    /// `add_bos_token` flag); `parse_special` lets control-token texts such as
    /// `</s>` in `text` become those tokens (otherwise they are plain text).
    pub fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<i32>> {
        let text_len = c_len(text.len(), "text")?;
        let mut out: Vec<i32> = Vec::new();
        if add_bos {
            let bos = self
                .bos()
                .ok_or_else(|| Error::InvalidModel("vocabulary has no BOS token".into()))?;
            out.push(bos);
        }
        if text.is_empty() {
            return Ok(out);
        }
        // SentencePiece never yields more tokens than bytes + the prefix space.
        let mut cap = text.len() + 2;
        for _ in 0..2 {
            let mut buf = vec![0i32; cap];
            let n_max = c_len(cap, "token buffer")?;
            // SAFETY: `text` points at `text_len` valid bytes (no NUL needed,
            // the length is passed); `buf` has room for `n_max` tokens and
            // llama_tokenize writes at most that many.
            let n = unsafe {
                ffi::llama_tokenize(
                    self.vocab(),
                    text.as_ptr() as *const c_char,
                    text_len,
                    buf.as_mut_ptr(),
                    n_max,
                    false,
                    parse_special,
                )
            };
            if n == i32::MIN {
                return Err(Error::InvalidArgument(
                    "tokenization overflows int32".into(),
                ));
            }
            if n >= 0 {
                buf.truncate(n as usize);
                out.extend_from_slice(&buf);
                return Ok(out);
            }
            // Negative: the number of tokens needed.
            cap = n.unsigned_abs() as usize;
        }
        Err(Error::Backend(with_detail(
            "llama_tokenize did not converge".into(),
        )))
    }

    /// The bytes of one token as llama.cpp renders it: SentencePiece pieces
    /// with `▁` turned into a space, byte tokens as their single raw byte
    /// (possibly part of a multi-byte UTF-8 character), control tokens as
    /// nothing. Ids outside the vocabulary give no bytes.
    pub fn token_to_piece(&self, tok: i32) -> Vec<u8> {
        if self.tok_opt(tok).is_none() {
            return Vec::new();
        }
        let mut buf = vec![0u8; 32];
        for _ in 0..2 {
            let len = match i32::try_from(buf.len()) {
                Ok(l) => l,
                Err(_) => return Vec::new(),
            };
            // SAFETY: token id checked to be in range (llama.cpp's cache uses
            // `.at()`, which would throw otherwise); `buf` holds `len`
            // writable bytes and llama_token_to_piece writes at most that.
            let n = unsafe {
                ffi::llama_token_to_piece(
                    self.vocab(),
                    tok,
                    buf.as_mut_ptr() as *mut c_char,
                    len,
                    0,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        Vec::new()
    }

    /// The token's text as stored in the vocabulary (e.g. `▁the`, `<0x0A>`).
    pub fn token_text(&self, tok: i32) -> Option<String> {
        self.tok_opt(tok)?;
        // SAFETY: in-range token id; the returned string is owned by the
        // vocabulary, NUL-terminated, and copied before we return.
        unsafe {
            let p = ffi::llama_vocab_get_text(self.vocab(), tok);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }
}
