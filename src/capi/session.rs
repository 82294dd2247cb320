//! Sessions: create, cancel, describe (one region, a video, a batch of
//! regions), and read what the last describe call made.

use std::ffi::{c_char, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::{Mutex, MutexGuard, TryLockError};

use super::input::{image_at, options_at, region_at, regions_at};
use super::model::{model_ref, DamModel};
use super::types::*;
use super::{
    check_struct_size, clear_out, fail, guard, guard_default, guard_value, invalid, read_optional,
    threads_of, write_text, Fail,
};
use crate::log::{self, LogLevel, Logger};
use crate::model::{CancelHandle, Frame, Session, Timings, MAX_REGIONS};

const SESSION_MAGIC: u64 = 0x6461_6d5f_7365_7373; // "dam_sess"

/// The state of one conversation with a model: KV cache, compute buffers,
/// the last caption and timings. One thread at a time (except
/// `dam_session_cancel`).
pub struct DamSession {
    magic: u64,
    /// Outside the lock, so that `dam_session_cancel` never waits.
    cancel: CancelHandle,
    max_frames: usize,
    log: Option<Logger>,
    state: Mutex<SessionState>,
}

// The contract lets a session move between threads (one at a time) while
// others cancel it: check that the Rust type allows it.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<DamSession>();
};

struct SessionState {
    session: Session,
    /// The captions of the last successful describe call: one, or one per
    /// region of a batch (empty before one, and after a failed one).
    captions: Vec<String>,
    timings: Timings,
}

/// # Safety
/// `p`, when not NULL, must be a live `dam_session` from `dam_session_new`.
unsafe fn session_ref<'a>(p: *const DamSession) -> Result<&'a DamSession, Fail> {
    if p.is_null() {
        return Err(invalid("session is NULL"));
    }
    // SAFETY: as in `model_ref`: the tag is read through the raw pointer.
    if unsafe { ptr::addr_of!((*p).magic).read_unaligned() } != SESSION_MAGIC {
        return Err(invalid(
            "session is not a dam_session (freed, or another object)",
        ));
    }
    // SAFETY: a live session (tag checked); only shared access is taken
    // (mutation goes through the Mutex / the atomic cancel flag).
    Ok(unsafe { &*p })
}

impl DamSession {
    fn lock(&self) -> Result<MutexGuard<'_, SessionState>, Fail> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(invalid(
                "the session is in use by another call (a session serves one thread at a time; create one per thread)",
            )),
            Err(TryLockError::Poisoned(_)) => Err(fail(
                DamStatus::Internal,
                "the session is unusable after an internal error; free it and create another",
            )),
        }
    }

    /// Runs one describe call under the session's lock and logger: the
    /// last captions and timings are cleared first and set from `run`'s
    /// result.
    fn describe(
        &self,
        run: impl FnOnce(&mut Session) -> crate::Result<(Vec<String>, Timings)>,
    ) -> Result<MutexGuard<'_, SessionState>, Fail> {
        let _scope = log::enter(self.log.clone());
        let mut st = self.lock()?;
        st.captions.clear();
        st.timings = Timings::default();
        let (captions, timings) =
            run(&mut st.session).inspect_err(|e| log::emit(LogLevel::Debug, &e.to_string()))?;
        st.captions = captions;
        st.timings = timings;
        Ok(st)
    }
}

/// Hands each caption piece to a caller's token callback as a
/// NUL-terminated string (one buffer, reused).
#[derive(Default)]
struct Pieces(Vec<u8>);

impl Pieces {
    /// `call(piece, len)` with `t` NUL-terminated in the buffer.
    fn send(&mut self, t: &str, call: impl FnOnce(*const c_char, usize) -> bool) -> bool {
        self.0.clear();
        self.0.extend_from_slice(t.as_bytes());
        self.0.push(0);
        call(self.0.as_ptr().cast::<c_char>(), t.len())
    }
}

// ------------------------------------------------------------------ create, free, cancel

/// Default session parameters. Any thread. Since API 1.3; the same as
/// `dam_session_default_params`.
#[no_mangle]
pub extern "C" fn dam_session_params_default() -> DamSessionParams {
    guard_default(|| DamSessionParams {
        struct_size: size_of::<DamSessionParams>() as u32,
        // 0: the model's thread count.
        n_threads: 0,
    })
}

/// The 1.0 name of `dam_session_params_default` (same function); kept for
/// programs that use it.
#[no_mangle]
pub extern "C" fn dam_session_default_params() -> DamSessionParams {
    dam_session_params_default()
}

/// Creates a session (KV cache, compute buffers) on `model`; `params` may be
/// NULL (defaults). On success `*out_session` is owned by the caller (free
/// it with `dam_session_free`); on failure it is NULL. Any thread, also
/// concurrently on the same model.
#[no_mangle]
pub unsafe extern "C" fn dam_session_new(
    model: *const DamModel,
    params: *const DamSessionParams,
    out_session: *mut *mut DamSession,
) -> DamStatus {
    guard(|| {
        if out_session.is_null() {
            return Err(invalid("out_session is NULL"));
        }
        // SAFETY: writable by contract.
        unsafe { out_session.write_unaligned(ptr::null_mut()) };
        // SAFETY: NULL or a live model by contract.
        let m = unsafe { model_ref(model) }?;
        let defaults = dam_session_params_default();
        // SAFETY: NULL or a dam_session_params of struct_size bytes.
        let p = unsafe { read_optional(params, defaults, SESSION_PARAMS_MIN, "params") }?;
        let threads = threads_of(p.n_threads)?;
        let _scope = log::enter(m.log.clone());
        let mut session = m.model.session()?;
        if threads > 0 {
            session.set_threads(threads)?;
        }
        let boxed = Box::new(DamSession {
            magic: SESSION_MAGIC,
            cancel: session.cancel_handle(),
            max_frames: m.model.max_frames(),
            log: m.log.clone(),
            state: Mutex::new(SessionState {
                session,
                captions: Vec::new(),
                timings: Timings::default(),
            }),
        });
        // SAFETY: writable by contract.
        unsafe { out_session.write_unaligned(Box::into_raw(boxed)) };
        Ok(())
    })
}

/// Frees a session; NULL is a no-op. No other call (`dam_session_cancel`
/// included) may use this pointer concurrently or afterwards.
#[no_mangle]
pub unsafe extern "C" fn dam_session_free(session: *mut DamSession) {
    guard_value((), || {
        // SAFETY: NULL or a live session by contract.
        if unsafe { session_ref(session) }.is_err() {
            return;
        }
        // SAFETY: a live session from `Box::into_raw` in `dam_session_new`,
        // given up by its owner here.
        let mut b = unsafe { Box::from_raw(session) };
        b.magic = 0;
        drop(b);
    })
}

/// Cancels the session's running describe call (it returns
/// `DAM_STATUS_CANCELLED` within one graph computation or one token), or,
/// when none runs, the next one. Any thread, at any time while the session
/// is alive (also from a token callback); never blocks.
#[no_mangle]
pub unsafe extern "C" fn dam_session_cancel(session: *const DamSession) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        s.cancel.cancel();
        Ok(())
    })
}

// ------------------------------------------------------------------ describe

/// One `dam_describe` / `dam_describe_video` call on checked frames.
///
/// # Safety
/// Output pointers as in `write_text`.
#[allow(clippy::too_many_arguments)]
unsafe fn describe_frames(
    s: &DamSession,
    frames: &[Frame],
    video: bool,
    options: *const DamDescribeOptions,
    on_token: DamTokenCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> Result<(), Fail> {
    // SAFETY: NULL or options of struct_size bytes (contract).
    let opts = unsafe { options_at(options) }?;
    let mut pieces = Pieces::default();
    let mut on_text = |t: &str| -> bool {
        let Some(cb) = on_token else {
            return true;
        };
        // SAFETY: the caller's token callback with its user data; the
        // piece is NUL-terminated and outlives the call.
        pieces.send(t, |p, n| unsafe { cb(p, n, user_data) })
    };
    let st = s.describe(|session| {
        let c = if video {
            session.describe_video(frames, &opts, &mut on_text)?
        } else {
            let f = &frames[0];
            session.describe_stream(&f.image, &f.region, &opts, &mut on_text)?
        };
        for k in &c.dropped_frames {
            log::emit(
                LogLevel::Warn,
                &format!("frame {k} dropped: its region is empty"),
            );
        }
        Ok((vec![c.text], c.timings))
    })?;
    // SAFETY: forwarded contract.
    unsafe { write_text(&st.captions[0], out, out_cap, out_len) }
}

/// Describes `region` of `image`. `options` may be NULL (defaults);
/// `on_token` may be NULL. The caption (UTF-8, NUL-terminated) is written to
/// `out` when it fits in `out_cap` bytes; `*out_len` (when `out_len` is not
/// NULL) is set to its size including the NUL. When `out` is NULL or too
/// small the call still generates the caption, keeps it in the session and
/// returns `DAM_STATUS_BUFFER_TOO_SMALL`: fetch it with
/// `dam_session_last_caption` without generating again. Returning false from
/// `on_token` ends generation early with `DAM_STATUS_OK`. The session is used
/// by one thread at a time; a second concurrent call on the same session
/// returns `DAM_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn dam_describe(
    session: *mut DamSession,
    image: *const DamImageView,
    region: *const DamRegion,
    options: *const DamDescribeOptions,
    on_token: DamTokenCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { clear_out(out, out_cap, out_len) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        // SAFETY: NULL or an image view following the header's rules.
        let image = unsafe { image_at(image, "image") }?;
        // SAFETY: NULL or a region of struct_size bytes following the rules.
        let region = unsafe { region_at(region, "region") }?;
        let frames = [Frame { image, region }];
        // SAFETY: options and output pointers as the header says.
        unsafe {
            describe_frames(
                s, &frames, false, options, on_token, user_data, out, out_cap, out_len,
            )
        }
    })
}

/// Describes the region followed through `n_frames` frames of a video
/// (`images[k]` with `regions[k]`; 1 <= n_frames <= `dam_model_max_frames`).
/// All regions must have the same `struct_size` (the array's element size
/// is `regions[0].struct_size`). Frames whose region is empty are dropped (a
/// warning is logged); if all are, `DAM_STATUS_INVALID_REGION`. Output,
/// callback and threading rules as `dam_describe`.
#[no_mangle]
pub unsafe extern "C" fn dam_describe_video(
    session: *mut DamSession,
    images: *const DamImageView,
    regions: *const DamRegion,
    n_frames: usize,
    options: *const DamDescribeOptions,
    on_token: DamTokenCallback,
    user_data: *mut c_void,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { clear_out(out, out_cap, out_len) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        let max = s.max_frames;
        if n_frames == 0 || n_frames > max {
            return Err(invalid(format!(
                "n_frames is {n_frames}; the model takes 1..={max} frames"
            )));
        }
        if images.is_null() {
            return Err(invalid("images is NULL"));
        }
        // SAFETY: NULL or `n_frames` regions of regions[0].struct_size bytes.
        let regions = unsafe { regions_at(regions, n_frames) }?;
        let frames = regions
            .into_iter()
            .enumerate()
            .map(|(k, region)| {
                // SAFETY: `images` holds `n_frames` views (contract); k < n_frames.
                let image = unsafe { image_at(images.add(k), &format!("images[{k}]")) }?;
                Ok(Frame { image, region })
            })
            .collect::<Result<Vec<_>, Fail>>()?;
        // SAFETY: options and output pointers as the header says.
        unsafe {
            describe_frames(
                s, &frames, true, options, on_token, user_data, out, out_cap, out_len,
            )
        }
    })
}

/// Describes `n_regions` regions of one image in one call (1 <= n_regions
/// <= 64): the vision stage runs batched and the captions decode in
/// parallel (up to the model's `n_seq_max` at once; more run in waves).
/// Each caption equals what `dam_describe` gives for that region alone.
/// All regions must have the same `struct_size` (the array's element size
/// is `regions[0].struct_size`); any invalid region fails the whole call
/// (the message names it). Read the captions with `dam_session_caption`
/// (index = region). `on_token` (may be NULL) receives each piece with its
/// region's index; returning false stops that region's caption only.
/// `dam_session_timings` then gives the whole call's times and token
/// counts. Threading rules as `dam_describe`. Since API 1.1.
#[no_mangle]
pub unsafe extern "C" fn dam_describe_batch(
    session: *mut DamSession,
    image: *const DamImageView,
    regions: *const DamRegion,
    n_regions: usize,
    options: *const DamDescribeOptions,
    on_token: DamBatchTokenCallback,
    user_data: *mut c_void,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        if n_regions == 0 || n_regions > MAX_REGIONS {
            return Err(invalid(format!(
                "n_regions is {n_regions}; 1..={MAX_REGIONS} regions per call"
            )));
        }
        if image.is_null() {
            return Err(invalid("image is NULL"));
        }
        if regions.is_null() {
            return Err(invalid("regions is NULL"));
        }
        // SAFETY: an image view following the header's rules.
        let image = unsafe { image_at(image, "image") }?;
        // SAFETY: `n_regions` regions of regions[0].struct_size bytes.
        let rs = unsafe { regions_at(regions, n_regions) }?;
        // SAFETY: NULL or options of struct_size bytes (contract).
        let opts = unsafe { options_at(options) }?;
        let mut pieces = Pieces::default();
        let mut on_text = |k: usize, t: &str| -> bool {
            let Some(cb) = on_token else {
                return true;
            };
            // SAFETY: the caller's callback with its user data; the piece
            // is NUL-terminated and outlives the call.
            pieces.send(t, |p, n| unsafe { cb(k, p, n, user_data) })
        };
        s.describe(|session| {
            let r = session.describe_many(&image, &rs, &opts, &mut on_text)?;
            Ok((r.captions.into_iter().map(|c| c.text).collect(), r.timings))
        })
        .map(drop)
    })
}

// ------------------------------------------------------------------ results

/// The number of captions the session's last successful describe call made
/// (1 for `dam_describe*`, `n_regions` for `dam_describe_batch`; 0 before
/// one, after a failed one, and for NULL). Same thread rule as
/// `dam_describe`. Since API 1.1.
#[no_mangle]
pub unsafe extern "C" fn dam_session_caption_count(session: *const DamSession) -> usize {
    guard_value(0, || {
        // SAFETY: NULL or a live session by contract.
        let Ok(s) = (unsafe { session_ref(session) }) else {
            return 0;
        };
        s.lock().map_or(0, |st| st.captions.len())
    })
}

/// Copies caption `index` of the session's last successful describe call
/// (0 for `dam_describe*`; the region's index for `dam_describe_batch`) into
/// `out`, with the size-query rules of `dam_describe`. An index at or past
/// `dam_session_caption_count` is `DAM_STATUS_INVALID_ARGUMENT`. Same thread
/// rule as `dam_describe`. Since API 1.1.
#[no_mangle]
pub unsafe extern "C" fn dam_session_caption(
    session: *const DamSession,
    index: usize,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { clear_out(out, out_cap, out_len) };
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        let st = s.lock()?;
        let text = st.captions.get(index).ok_or_else(|| {
            invalid(format!(
                "caption {index} does not exist (the last call made {})",
                st.captions.len()
            ))
        })?;
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { write_text(text, out, out_cap, out_len) }
    })
}

/// Copies the caption of the session's last successful describe call into
/// `out` with the same size-query rules as `dam_describe` (`*out_len` =
/// size with the NUL; `DAM_STATUS_BUFFER_TOO_SMALL` when `out` is NULL or
/// too small). "" before any call and after a failed one. Same thread rule
/// as `dam_describe`.
#[no_mangle]
pub unsafe extern "C" fn dam_session_last_caption(
    session: *const DamSession,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        let st = s.lock()?;
        let text = st.captions.first().map_or("", String::as_str);
        // SAFETY: output pointers NULL or writable by contract.
        unsafe { write_text(text, out, out_cap, out_len) }
    })
}

/// Fills `*out` with the timings of the session's last successful describe
/// call (zeros before one and after a failed one). Set `out->struct_size`
/// first. Same thread rule as `dam_describe`.
#[no_mangle]
pub unsafe extern "C" fn dam_session_timings(
    session: *const DamSession,
    out: *mut DamTimings,
) -> DamStatus {
    guard(|| {
        // SAFETY: NULL or a live session by contract.
        let s = unsafe { session_ref(session) }?;
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: non-NULL; a dam_timings starts with its u32 struct_size.
        let size = unsafe { ptr::read_unaligned(out.cast::<u32>()) } as usize;
        check_struct_size(size, TIMINGS_MIN, usize::MAX, "out")?;
        let t = s.lock()?.timings.clone();
        let n = size.min(size_of::<DamTimings>());
        let v = DamTimings {
            struct_size: n as u32,
            n_prompt_tokens: u32::try_from(t.n_prompt_tokens).unwrap_or(u32::MAX),
            n_generated_tokens: u32::try_from(t.n_generated).unwrap_or(u32::MAX),
            preprocess_ms: t.preprocess_ms,
            vision_ms: t.vision_ms,
            prefill_ms: t.prefill_ms,
            decode_ms: t.decode_ms,
        };
        // SAFETY: the caller's struct has `size >= n` writable bytes; `v` is
        // ours and has `n <= size_of` readable bytes.
        unsafe { ptr::copy_nonoverlapping(ptr::addr_of!(v).cast::<u8>(), out.cast::<u8>(), n) };
        Ok(())
    })
}
