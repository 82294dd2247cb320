//! Read-only file mappings (the weights are never copied on the CPU).

use std::path::Path;

use crate::error::{Error, Result};

/// A read-only memory mapping of a whole file.
pub struct MappedFile {
    pub map: memmap2::Mmap,
    pub path: std::path::PathBuf,
}

impl MappedFile {
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only; like llama.cpp we accept that a
        // file modified by another process while mapped changes the weights
        // (the same contract as every mmap-based model loader).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MappedFile {
            map,
            path: path.to_path_buf(),
        })
    }
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}
