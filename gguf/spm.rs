//! A minimal reader of SentencePiece's `tokenizer.model` (a serialized
//! `ModelProto`, sentencepiece_model.proto), enough for llama.cpp's SPM
//! vocabulary: the pieces with scores and types, the special ids and the
//! normalizer flags.
//!
//! Field numbers (checked against sentencepiece 0.2's generated descriptor):
//! ModelProto { 1: repeated SentencePiece pieces, 2: TrainerSpec, 3: NormalizerSpec }
//! SentencePiece { 1: piece (string), 2: score (float), 3: type (enum) }
//! TrainerSpec { 3: model_type (1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR),
//!               40: unk_id, 41: bos_id, 42: eos_id, 43: pad_id (int32) }
//! NormalizerSpec { 3: add_dummy_prefix, 4: remove_extra_whitespaces (bool, default true) }

use crate::error::{Error, Result};

/// SentencePiece piece types; the numbering is also llama.cpp's token types.
pub mod piece_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub ty: i32,
}

/// What the converter needs from a `tokenizer.model`.
#[derive(Clone, Debug, PartialEq)]
pub struct SpModel {
    pub pieces: Vec<Piece>,
    /// 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR.
    pub model_type: i32,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Fixed64,
    Bytes(&'a [u8]),
}

fn err(what: &str, msg: &str) -> Error {
    Error::Convert(format!("tokenizer.model: {what}: {msg}"))
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| err(self.what, "truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err(self.what, "varint longer than 10 bytes"))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = self.buf.len().saturating_sub(self.pos);
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| err(self.what, "truncated field"))?;
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| err(self.what, "truncated field"))?;
        self.pos += n;
        Ok(s)
    }

    /// The next (field number, value).
    fn field(&mut self) -> Result<(u64, Field<'a>)> {
        let tag = self.varint()?;
        let num = tag >> 3;
        let f = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let n = self.varint()?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                let s = self.take(4)?;
                Field::Fixed32([s[0], s[1], s[2], s[3]])
            }
            w => {
                return Err(err(
                    self.what,
                    &format!("unsupported wire type {w} (field {num})"),
                ))
            }
        };
        Ok((num, f))
    }
}

/// int32 fields are varints of the sign-extended 64-bit value.
fn as_i32(v: u64, what: &str) -> Result<i32> {
    i32::try_from(v as i64).map_err(|_| err(what, "integer out of range"))
}

fn parse_piece(buf: &[u8]) -> Result<Piece> {
    let mut r = Reader::new(buf, "piece");
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        ty: piece_type::NORMAL,
    };
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => {
                p.piece = String::from_utf8(b.to_vec()).map_err(|_| err("piece", "not UTF-8"))?;
            }
            (2, Field::Fixed32(b)) => p.score = f32::from_le_bytes(b),
            (3, Field::Varint(v)) => p.ty = as_i32(v, "piece type")?,
            (1..=3, _) => return Err(err("piece", "field with the wrong wire type")),
            _ => {}
        }
    }
    if !(piece_type::NORMAL..=piece_type::BYTE).contains(&p.ty) {
        return Err(err(
            "piece",
            &format!("{:?} has unknown type {}", p.piece, p.ty),
        ));
    }
    Ok(p)
}

/// Parses a serialized `ModelProto`.
pub fn parse(buf: &[u8]) -> Result<SpModel> {
    let mut m = SpModel {
        pieces: Vec::new(),
        model_type: 1,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
    };
    let mut r = Reader::new(buf, "model");
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(b)) => m.pieces.push(parse_piece(b)?),
            (2, Field::Bytes(b)) => {
                let mut t = Reader::new(b, "trainer_spec");
                while !t.done() {
                    match t.field()? {
                        (3, Field::Varint(v)) => m.model_type = as_i32(v, "model_type")?,
                        (40, Field::Varint(v)) => m.unk_id = as_i32(v, "unk_id")?,
                        (41, Field::Varint(v)) => m.bos_id = as_i32(v, "bos_id")?,
                        (42, Field::Varint(v)) => m.eos_id = as_i32(v, "eos_id")?,
                        (43, Field::Varint(v)) => m.pad_id = as_i32(v, "pad_id")?,
                        _ => {}
                    }
                }
            }
            (3, Field::Bytes(b)) => {
                let mut n = Reader::new(b, "normalizer_spec");
                while !n.done() {
                    match n.field()? {
                        (3, Field::Varint(v)) => m.add_dummy_prefix = v != 0,
                        (4, Field::Varint(v)) => m.remove_extra_whitespaces = v != 0,
                        _ => {}
                    }
                }
            }
            (1..=3, _) => return Err(err("model", "field with the wrong wire type")),
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err(err("model", "no pieces (not a SentencePiece model?)"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes_field(num: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    #[test]
    fn hand_built_model() {
        let mut piece = Vec::new();
        bytes_field(1, "▁the".as_bytes(), &mut piece);
        varint(2 << 3 | 5, &mut piece);
        piece.extend_from_slice(&(-3.5f32).to_le_bytes());
        varint(3 << 3, &mut piece);
        varint(4, &mut piece);
        let mut trainer = Vec::new();
        varint(3 << 3, &mut trainer);
        varint(2, &mut trainer);
        varint(43 << 3, &mut trainer);
        varint(-1i64 as u64, &mut trainer);
        let mut norm = Vec::new();
        varint(3 << 3, &mut norm);
        varint(0, &mut norm);
        let mut m = Vec::new();
        bytes_field(1, &piece, &mut m);
        bytes_field(2, &trainer, &mut m);
        bytes_field(3, &norm, &mut m);
        let sp = parse(&m).unwrap();
        assert_eq!(
            sp.pieces,
            vec![Piece {
                piece: "▁the".into(),
                score: -3.5,
                ty: 4
            }]
        );
        assert_eq!(
            (sp.model_type, sp.pad_id, sp.add_dummy_prefix),
            (2, -1, false)
        );
        // Truncations never panic.
        for n in 0..m.len() {
            let _ = parse(&m[..n]);
        }
    }
}
