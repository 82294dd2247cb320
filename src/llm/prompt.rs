//! The DAM prompt: the Vicuna "v1" conversation around the user text, the
//! `<image>` placeholders, optional length control, and tokenisation of the
//! prompt into text pieces and image slots.
//!
//! Tokenisation follows the reference (`tokenizer_image_token`): the prompt
//! is split at every `<image>`, each chunk is tokenised on its own (the
//! first with BOS, the others without, each with SentencePiece's dummy-prefix
//! space), empty chunks give no tokens, and each `<image>` becomes one image
//! slot (its T embedding rows are spliced in at generation time; the
//! reference's ids use -200 there).

use std::str::FromStr;

use crate::error::Result;
use crate::sys::llama::LlamaModel;

/// The system sentence of the Vicuna "v1" template.
pub const SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. \
The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// The image placeholder in prompts.
pub const IMAGE_TOKEN: &str = "<image>";

/// The id the reference uses for an image slot in `prompt_ids`.
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// The default single-image query of the reference scripts (without the
/// `<image>\n` prefix).
pub const DEFAULT_QUERY: &str = "Describe the masked region in detail.";

/// The default video query of the reference scripts (without the prefix).
pub const DEFAULT_VIDEO_QUERY: &str = "Given the video in the form of a sequence of frames above, \
describe the object in the masked region in the video in detail.";

/// Prefix before the video's `<image>` run (all released checkpoints).
pub const VIDEO_PREFIX: &str = "Video: ";
/// Prefix before a single `<image>` for the image/video joint checkpoint
/// (`DAM-3B-Video`); the image-only `DAM-3B` uses no prefix ("").
pub const JOINT_IMAGE_PREFIX: &str = "Image: ";

/// The full "v1" conversation for one user turn: `SYSTEM USER: {user} ASSISTANT:`.
pub fn conversation(user: &str) -> String {
    format!("{SYSTEM} USER: {user} ASSISTANT:")
}

/// Requested description length, expressed as the prompt suffix the
/// released model was trained with (MODEL.md section 5: ` in 3 words`,
/// ` in about 50 words`, ` in more than 200 words`, ` in 2 sentences`).
///
/// The reference repository (NVlabs/describe-anything @ 153ad3d) contains
/// no code that builds these suffixes, so the spelling for a count of 1 is
/// not documented anywhere we can check; we use the grammatical singular
/// (` in 1 word`, ` in 1 sentence`), and digits for every count as in the
/// examples above.
///
/// Spelt `KIND:N` (`dam describe --length about:20`, [`FromStr`]) or, in
/// JSON (the server's `length` field), that string or `{"KIND": N}`
/// (`{"about_words": 20}`); both go through [`LengthControl::from_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LengthControl {
    /// ` in {n} words`
    Words(u32),
    /// ` in about {n} words`
    AboutWords(u32),
    /// ` in more than {n} words`
    MoreThanWords(u32),
    /// ` in {n} sentences`
    Sentences(u32),
}

/// The kinds [`LengthControl::from_kind`] knows, for error messages.
const LENGTH_KINDS: &str = "words, about, more-than or sentences";

impl LengthControl {
    /// The one parser of a length kind and count (the CLI's `KIND:N` and the
    /// server's JSON): `words`, `about` (`about-words`), `more-than`
    /// (`more-than-words`), `sentences`, `_` allowed for `-`; `n` >= 1. The
    /// error says why, without the input.
    pub fn from_kind(kind: &str, n: u64) -> std::result::Result<Self, String> {
        let n = u32::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("N must be a positive integer, not {n}"))?;
        match kind.replace('_', "-").as_str() {
            "words" => Ok(LengthControl::Words(n)),
            "about" | "about-words" => Ok(LengthControl::AboutWords(n)),
            "more-than" | "more-than-words" => Ok(LengthControl::MoreThanWords(n)),
            "sentences" => Ok(LengthControl::Sentences(n)),
            _ => Err(format!("kind must be {LENGTH_KINDS}, not `{kind}`")),
        }
    }

    /// The suffix, starting with a space, without a final period.
    pub fn suffix(&self) -> String {
        fn noun(n: u32, one: &str, many: &str) -> String {
            format!("{n} {}", if n == 1 { one } else { many })
        }
        match *self {
            LengthControl::Words(n) => format!(" in {}", noun(n, "word", "words")),
            LengthControl::AboutWords(n) => format!(" in about {}", noun(n, "word", "words")),
            LengthControl::MoreThanWords(n) => {
                format!(" in more than {}", noun(n, "word", "words"))
            }
            LengthControl::Sentences(n) => format!(" in {}", noun(n, "sentence", "sentences")),
        }
    }

    /// Appends the suffix to a query: before a final `.` if the query ends
    /// with one (`Describe ... in detail.` becomes `Describe ... in detail in
    /// about 20 words.`, the form of fixture c1_len20), else at the end.
    pub fn apply(&self, query: &str) -> String {
        let q = query.trim_end();
        match q.strip_suffix('.') {
            Some(stem) => format!("{stem}{}.", self.suffix()),
            None => format!("{q}{}", self.suffix()),
        }
    }
}

/// `KIND:N`, as `dam describe --length about:20`; the error says why.
impl FromStr for LengthControl {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, n) = s
            .split_once(':')
            .ok_or_else(|| format!("expected KIND:N (KIND {LENGTH_KINDS})"))?;
        let n = n
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("N must be a positive integer, not `{n}`"))?;
        LengthControl::from_kind(kind.trim(), n)
    }
}

/// `"KIND:N"` or `{"KIND": N}` (exactly one entry).
impl<'de> serde::Deserialize<'de> for LengthControl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LengthControl;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a length: "about:20" or {"about_words": 20}"#)
            }

            fn visit_str<E: serde::de::Error>(
                self,
                s: &str,
            ) -> std::result::Result<Self::Value, E> {
                s.parse()
                    .map_err(|why| E::custom(format!("length `{s}`: {why}")))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let (kind, n) = m
                    .next_entry::<String, u64>()?
                    .ok_or_else(|| A::Error::custom("length: an empty object"))?;
                if m.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("length: give one KIND: N entry"));
                }
                LengthControl::from_kind(&kind, n)
                    .map_err(|why| A::Error::custom(format!("length {{\"{kind}\": {n}}}: {why}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the visual input is: one image, or a video of `n` frames (a
/// 1-frame video still gets the video prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Media {
    Image,
    Video(usize),
}

impl Media {
    /// `Image` for `n_frames <= 1`, else `Video(n_frames)`.
    pub fn from_frames(n_frames: usize) -> Media {
        if n_frames <= 1 {
            Media::Image
        } else {
            Media::Video(n_frames)
        }
    }

    /// Number of image slots in the prompt.
    pub fn n_images(&self) -> usize {
        match *self {
            Media::Image => 1,
            Media::Video(n) => n,
        }
    }
}

/// The user turn: `{image_prefix}<image>\n{query}` for one image,
/// `{video_prefix}<image>...(n times)\n{query}` for a video (`n_frames > 1`;
/// `n_frames` 0 or 1 means one image). See [`user_text_for`] to force the
/// video form for a single frame.
pub fn user_text(image_prefix: &str, video_prefix: &str, n_frames: usize, query: &str) -> String {
    user_text_for(
        image_prefix,
        video_prefix,
        Media::from_frames(n_frames),
        query,
    )
}

/// [`user_text`] with the media kind explicit.
pub fn user_text_for(image_prefix: &str, video_prefix: &str, media: Media, query: &str) -> String {
    let (prefix, n) = match media {
        Media::Image => (image_prefix, 1),
        Media::Video(n) => (video_prefix, n),
    };
    let mut s = String::with_capacity(prefix.len() + n * IMAGE_TOKEN.len() + 1 + query.len());
    s.push_str(prefix);
    for _ in 0..n {
        s.push_str(IMAGE_TOKEN);
    }
    s.push('\n');
    s.push_str(query);
    s
}

/// One piece of a tokenised prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptPiece {
    /// Text token ids.
    Tokens(Vec<i32>),
    /// The embeddings of image (frame) number `.0`, in prompt order.
    Image(usize),
}

/// Splits `prompt` at `<image>` and tokenises each chunk on its own: the
/// first with BOS, all with the SentencePiece dummy-prefix space (llama.cpp's
/// SPM tokenizer adds it per call, as SentencePiece does per `encode`), empty
/// chunks skipped (they would otherwise give a lone `▁`). Image slots are
/// numbered 0, 1, ... in order.
///
/// `parse_special` is false: user text is plain text, so a literal `</s>` or
/// `<s>` in a query stays text and cannot end or restart the prompt. (The
/// reference's Hugging Face tokenizer would map such literal text to the
/// control ids; DAM prompts never contain it, and treating user input as
/// text avoids prompt injection.)
pub fn tokenize_prompt(model: &LlamaModel, prompt: &str) -> Result<Vec<PromptPiece>> {
    let mut pieces = Vec::new();
    for (i, chunk) in prompt.split(IMAGE_TOKEN).enumerate() {
        if i > 0 {
            pieces.push(PromptPiece::Image(i - 1));
        }
        // An empty chunk gives BOS (first chunk) or nothing.
        let toks = model.tokenize(chunk, i == 0, false)?;
        if !toks.is_empty() {
            pieces.push(PromptPiece::Tokens(toks));
        }
    }
    Ok(pieces)
}

/// The reference's id list: text ids, and -200 per image slot.
pub fn prompt_ids(pieces: &[PromptPiece]) -> Vec<i64> {
    let mut ids = Vec::new();
    for p in pieces {
        match p {
            PromptPiece::Tokens(t) => ids.extend(t.iter().map(|&x| i64::from(x))),
            PromptPiece::Image(_) => ids.push(IMAGE_TOKEN_INDEX),
        }
    }
    ids
}

/// Number of image slots in `pieces`.
pub fn count_images(pieces: &[PromptPiece]) -> usize {
    pieces
        .iter()
        .filter(|p| matches!(p, PromptPiece::Image(_)))
        .count()
}

/// Number of LLM positions the prompt occupies with `t` rows per image.
pub fn prompt_len(pieces: &[PromptPiece], rows_per_image: usize) -> usize {
    pieces
        .iter()
        .map(|p| match p {
            PromptPiece::Tokens(t) => t.len(),
            PromptPiece::Image(_) => rows_per_image,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_matches_reference() {
        let p = conversation("<image>\nDescribe the masked region in detail.");
        assert_eq!(
            p,
            "A chat between a curious user and an artificial intelligence assistant. The \
             assistant gives helpful, detailed, and polite answers to the user's questions. \
             USER: <image>\nDescribe the masked region in detail. ASSISTANT:"
        );
    }

    #[test]
    fn length_suffixes() {
        assert_eq!(LengthControl::Words(3).suffix(), " in 3 words");
        assert_eq!(LengthControl::AboutWords(50).suffix(), " in about 50 words");
        assert_eq!(
            LengthControl::MoreThanWords(200).suffix(),
            " in more than 200 words"
        );
        assert_eq!(LengthControl::Sentences(2).suffix(), " in 2 sentences");
        assert_eq!(LengthControl::Sentences(1).suffix(), " in 1 sentence");
        assert_eq!(LengthControl::Words(1).suffix(), " in 1 word");
        assert_eq!(
            LengthControl::AboutWords(20).apply(DEFAULT_QUERY),
            "Describe the masked region in detail in about 20 words."
        );
        assert_eq!(
            LengthControl::Words(3).apply("Describe it"),
            "Describe it in 3 words"
        );
    }

    #[test]
    fn length_spellings() {
        let about = Ok(LengthControl::AboutWords(20));
        for s in [
            "about:20",
            "about-words:20",
            "about_words:20",
            " about : 20",
        ] {
            assert_eq!(s.parse::<LengthControl>(), about, "{s}");
        }
        assert_eq!("words:3".parse(), Ok(LengthControl::Words(3)));
        assert_eq!("more-than:9".parse(), Ok(LengthControl::MoreThanWords(9)));
        assert_eq!("sentences:2".parse(), Ok(LengthControl::Sentences(2)));
        for bad in [
            "about",
            "bad:3",
            "about:0",
            "about:-1",
            "about:x",
            "words:99999999999",
        ] {
            assert!(bad.parse::<LengthControl>().is_err(), "{bad}");
        }
        let json = |v: &str| serde_json::from_str::<LengthControl>(v).map_err(|e| e.to_string());
        assert_eq!(json(r#""about:20""#), about);
        assert_eq!(json(r#"{"about_words": 20}"#), about);
        assert_eq!(
            json(r#"{"more_than_words": 5}"#),
            Ok(LengthControl::MoreThanWords(5))
        );
        for bad in [
            r#"{"about_words": 0}"#,
            r#"{"lines": 2}"#,
            r#"{}"#,
            r#"{"words": 2, "sentences": 1}"#,
            r#""bad:3""#,
            "20",
        ] {
            assert!(json(bad).is_err(), "{bad}");
        }
        assert!(json(r#"{"lines": 2}"#)
            .unwrap_err()
            .contains("kind must be"));
    }

    #[test]
    fn user_texts() {
        assert_eq!(user_text("", VIDEO_PREFIX, 1, "Q."), "<image>\nQ.");
        assert_eq!(
            user_text(JOINT_IMAGE_PREFIX, VIDEO_PREFIX, 1, "Q."),
            "Image: <image>\nQ."
        );
        assert_eq!(
            user_text("", VIDEO_PREFIX, 3, "Q."),
            "Video: <image><image><image>\nQ."
        );
        assert_eq!(
            user_text_for("", VIDEO_PREFIX, Media::Video(1), "Q."),
            "Video: <image>\nQ."
        );
    }

    #[test]
    fn ids_and_lengths() {
        let pieces = vec![
            PromptPiece::Tokens(vec![1, 5]),
            PromptPiece::Image(0),
            PromptPiece::Tokens(vec![7]),
        ];
        assert_eq!(prompt_ids(&pieces), vec![1, 5, -200, 7]);
        assert_eq!(count_images(&pieces), 1);
        assert_eq!(prompt_len(&pieces, 9), 12);
    }
}
