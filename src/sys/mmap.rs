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

    /// Drops this process's pages of `[offset, offset + len)` (whole pages
    /// inside it) from its resident set: a weight that was copied elsewhere
    /// (repacked) no longer keeps its file pages resident. The bytes stay
    /// readable: a later read faults them in again from the file.
    pub fn release(&self, offset: usize, len: usize) {
        // SAFETY: sysconf reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as usize } else { 4096 };
        let Some(end) = offset.checked_add(len).map(|e| e.min(self.map.len())) else {
            return;
        };
        // Whole pages only, so neighbouring tensors keep theirs.
        let start = offset.div_ceil(page) * page;
        let end = end / page * page;
        if start < end {
            // SAFETY: MADV_DONTNEED on a read-only file mapping (never
            // written through, no anonymous or copy-on-write pages) only
            // unmaps pages; the next read of the range maps the same file
            // bytes again, so every `&[u8]` into the mapping sees unchanged
            // contents. A failure only leaves the pages resident.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}
