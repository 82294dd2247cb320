//! Segmenters on their own: load, free, and a mask from clicks or a box
//! into a caller buffer. (A segmenter loaded with a model is
//! `dam_device_params.segmenter_path`.)

use std::ffi::c_char;
use std::ptr;
use std::sync::Mutex;

use super::input::{image_at, region_at};
use super::types::*;
use super::{check_api_version, fail, guard, guard_value, invalid, path_arg, threads_of, Fail};
use crate::segmenter::{regions::prompt_of, Segmenter};

const SEGMENTER_MAGIC: u64 = 0x6461_6d5f_7365_676d; // "dam_segm"

/// A loaded segmenter (a `dam-segmenter` GGUF file) and the image embedding
/// of the last image it segmented. Any thread; calls on one segmenter are
/// serialised.
pub struct DamSegmenter {
    magic: u64,
    seg: Mutex<Segmenter>,
}

// The contract lets any thread use a segmenter: check that Rust agrees.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<DamSegmenter>();
};

/// # Safety
/// `p`, when not NULL, must be a live `dam_segmenter`.
unsafe fn segmenter_ref<'a>(p: *const DamSegmenter) -> Result<&'a DamSegmenter, Fail> {
    if p.is_null() {
        return Err(invalid("segmenter is NULL"));
    }
    // SAFETY: non-NULL and live by contract; the tag is read through the
    // raw pointer so that another kind of object is refused before use.
    if unsafe { ptr::addr_of!((*p).magic).read_unaligned() } != SEGMENTER_MAGIC {
        return Err(invalid(
            "segmenter is not a dam_segmenter (freed, or another object)",
        ));
    }
    // SAFETY: a live segmenter (tag checked); shared access only.
    Ok(unsafe { &*p })
}

/// Loads a `dam-segmenter` GGUF file (every key, shape and type is checked
/// before use; a file of another architecture or a truncated one is
/// `DAM_STATUS_INVALID_MODEL`). `n_threads`: CPU threads, 0 = all cores.
/// On success `*out_segmenter` is owned by the caller (free it with
/// `dam_segmenter_free`), else NULL. Any thread. Since API 1.4.
#[no_mangle]
pub unsafe extern "C" fn dam_segmenter_load(
    api_version: u32,
    path: *const c_char,
    n_threads: i32,
    out_segmenter: *mut *mut DamSegmenter,
) -> DamStatus {
    guard(|| {
        if out_segmenter.is_null() {
            return Err(invalid("out_segmenter is NULL"));
        }
        // SAFETY: non-NULL and writable by contract.
        unsafe { out_segmenter.write_unaligned(ptr::null_mut()) };
        check_api_version(api_version)?;
        // SAFETY: a NUL-terminated string or NULL, by contract.
        let path = unsafe { path_arg(path, "path") }?;
        let seg = Segmenter::load(&path, threads_of(n_threads)?)?;
        let boxed = Box::new(DamSegmenter {
            magic: SEGMENTER_MAGIC,
            seg: Mutex::new(seg),
        });
        // SAFETY: writable by contract (checked non-NULL above).
        unsafe { out_segmenter.write_unaligned(Box::into_raw(boxed)) };
        Ok(())
    })
}

/// Frees a segmenter; NULL is a no-op. No other call may use it
/// concurrently or afterwards. Since API 1.4.
#[no_mangle]
pub unsafe extern "C" fn dam_segmenter_free(segmenter: *mut DamSegmenter) {
    guard_value((), || {
        // SAFETY: NULL or a live segmenter by contract.
        if unsafe { segmenter_ref(segmenter) }.is_err() {
            return;
        }
        // SAFETY: a live segmenter from `Box::into_raw` in
        // `dam_segmenter_load`, given up by its owner here.
        let mut b = unsafe { Box::from_raw(segmenter) };
        b.magic = 0;
        drop(b);
    })
}

/// Segments `image` with `region` (kind `DAM_REGION_KIND_POINTS` or
/// `DAM_REGION_KIND_SEGMENTED_BOX`, pixels): writes the selected mask
/// (the candidate with the highest predicted IoU), width * height bytes
/// row-major, 1 = inside, 0 = outside, into `mask` (`mask_size` >= width *
/// height, else `DAM_STATUS_BUFFER_TOO_SMALL` before any work).
/// `multimask`: 1 = three candidates (SAM's multimask output, what the
/// reference uses), 0 = one. The candidates' predicted IoU go to `scores`
/// (NULL = not wanted; fewer than `*out_n_scores` slots =
/// `DAM_STATUS_BUFFER_TOO_SMALL` after the mask is written); `out_n_scores`
/// and `out_best` (index of the selected candidate) may be NULL. A second
/// call on the same image (same size, format and bytes) reuses its
/// embedding and runs only the mask decoder. Clicks outside the image, NaN,
/// no points, labels other than 0/1 and degenerate boxes are
/// `DAM_STATUS_INVALID_ARGUMENT`. Since API 1.4.
#[no_mangle]
pub unsafe extern "C" fn dam_segment(
    segmenter: *mut DamSegmenter,
    image: *const DamImageView,
    region: *const DamRegion,
    multimask: i32,
    mask: *mut u8,
    mask_size: usize,
    scores: *mut f32,
    scores_cap: usize,
    out_n_scores: *mut usize,
    out_best: *mut i32,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live segmenter by contract.
        let s = unsafe { segmenter_ref(segmenter) }?;
        // SAFETY: NULL or an image view following the header's rules.
        let image = unsafe { image_at(image, "image") }?;
        // SAFETY: NULL or a region of struct_size bytes following the rules.
        let region = unsafe { region_at(region, "region") }?;
        let mut prompt = prompt_of(&region).ok_or_else(|| {
            invalid(
                "region: dam_segment takes DAM_REGION_KIND_POINTS or DAM_REGION_KIND_SEGMENTED_BOX",
            )
        })?;
        prompt.multimask = match multimask {
            0 => false,
            1 => true,
            k => return Err(invalid(format!("multimask {k} is not 0 or 1"))),
        };
        let need = image.width() as usize * image.height() as usize;
        if mask.is_null() || mask_size < need {
            return Err(fail(
                DamStatus::BufferTooSmall,
                format!(
                    "the mask needs {need} bytes (width * height), the buffer has {}",
                    if mask.is_null() { 0 } else { mask_size }
                ),
            ));
        }
        let result = {
            let mut seg = s.seg.lock().unwrap_or_else(|e| e.into_inner());
            seg.segment(&image, &prompt)?
        };
        // SAFETY: `mask` has `mask_size >= need` writable bytes (contract);
        // the mask is ours, so they do not overlap.
        unsafe { ptr::copy_nonoverlapping(result.mask.data.as_ptr(), mask, need) };
        let n = result.iou.len();
        if !out_n_scores.is_null() {
            // SAFETY: non-NULL and writable by contract.
            unsafe { out_n_scores.write_unaligned(n) };
        }
        if !out_best.is_null() {
            // SAFETY: non-NULL and writable by contract.
            unsafe { out_best.write_unaligned(result.best as i32) };
        }
        if !scores.is_null() {
            if scores_cap < n {
                return Err(fail(
                    DamStatus::BufferTooSmall,
                    format!("scores needs {n} floats, the buffer has {scores_cap}"),
                ));
            }
            for (i, &v) in result.iou.iter().enumerate() {
                // SAFETY: `scores` has `scores_cap >= n > i` writable floats.
                unsafe { scores.add(i).write_unaligned(v) };
            }
        }
        Ok(())
    })
}
