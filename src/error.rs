//! The one error type of the engine. Every fallible public function returns
//! `Result<T, Error>`; the C ABI maps each variant to a `dam_status`.

use std::fmt;

/// What went wrong. Messages are one line, meant for an end user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A caller-supplied argument is invalid (sizes, strides, options).
    InvalidArgument(String),
    /// The region is empty, outside the image or otherwise unusable.
    InvalidRegion(String),
    /// A region kind the engine cannot handle yet (points need a segmenter).
    UnsupportedRegion(String),
    /// A model file is malformed, truncated or inconsistent.
    InvalidModel(String),
    /// A checkpoint folder cannot be converted.
    Convert(String),
    /// Reading or writing a file failed.
    Io(String),
    /// The prompt does not fit into the context window.
    ContextOverflow(String),
    /// The computation was cancelled by the caller.
    Cancelled,
    /// ggml / llama.cpp reported a failure.
    Backend(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::InvalidRegion(m) => write!(f, "invalid region: {m}"),
            Error::UnsupportedRegion(m) => write!(f, "unsupported region kind: {m}"),
            Error::InvalidModel(m) => write!(f, "invalid model: {m}"),
            Error::Convert(m) => write!(f, "conversion failed: {m}"),
            Error::Io(m) => write!(f, "i/o error: {m}"),
            Error::ContextOverflow(m) => write!(f, "context overflow: {m}"),
            Error::Cancelled => write!(f, "cancelled"),
            Error::Backend(m) => write!(f, "backend error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Io(format!("{}: {e}", path.as_ref().display()))
    }
}
