//! Models: default and device parameters, load, free.

use std::ffi::c_char;
use std::mem::size_of;
use std::ptr;
use std::sync::Arc;

use super::types::*;
use super::{
    check_api_version, check_struct_size, enum_arg, fail, guard, guard_default, guard_value,
    invalid, path_arg, read_optional, threads_of, Fail,
};
use crate::error::Error;
use crate::log::{self, LogLevel, Logger};
use crate::model::{Model, ModelParams};
use crate::sys::llama::MAX_SEQUENCES;

const MODEL_MAGIC: u64 = 0x6461_6d5f_6d6f_646c; // "dam_modl"

/// A loaded model: both GGUF files, memory-mapped and immutable. Shareable:
/// any number of threads may use one model at once.
pub struct DamModel {
    magic: u64,
    pub(crate) model: Arc<Model>,
    /// Where the lines of this model's calls go (None: quiet).
    pub(crate) log: Option<Logger>,
}

// The contract lets any thread use a model: check that the Rust type allows it.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<DamModel>();
};

/// # Safety
/// `p`, when not NULL, must be a live `dam_model` from `dam_model_load`.
pub(crate) unsafe fn model_ref<'a>(p: *const DamModel) -> Result<&'a DamModel, Fail> {
    if p.is_null() {
        return Err(invalid("model is NULL"));
    }
    // SAFETY: non-NULL and, by contract, pointing to a live model; the tag
    // is read through the raw pointer (no reference is made) so that a
    // pointer to another kind of object is refused before it is used.
    if unsafe { ptr::addr_of!((*p).magic).read_unaligned() } != MODEL_MAGIC {
        return Err(invalid(
            "model is not a dam_model (freed, or another object)",
        ));
    }
    // SAFETY: a live model (tag checked); shared access only.
    Ok(unsafe { &*p })
}

// ------------------------------------------------------------------ parameters

/// The C form of the engine's default model parameters.
fn model_params_default() -> DamModelParams {
    let d = ModelParams::default();
    DamModelParams {
        struct_size: size_of::<DamModelParams>() as u32,
        n_threads: i32::try_from(d.threads).unwrap_or(0),
        n_ctx: d.n_ctx,
        kv_type: DamKvType::from(d.kv_type) as i32,
        flash_attn: DamFlashAttn::from(d.flash_attn) as i32,
        n_gpu_layers: d.n_gpu_layers,
        progress_callback: None,
        progress_user_data: ptr::null_mut(),
        log_callback: None,
        log_user_data: ptr::null_mut(),
        log_level: DamLogLevel::from(LogLevel::default()) as i32,
        n_seq_max: d.n_seq_max,
    }
}

/// The C form of the engine's default device parameters.
fn device_params_default() -> DamDeviceParams {
    let d = ModelParams::default();
    DamDeviceParams {
        struct_size: size_of::<DamDeviceParams>() as u32,
        main_gpu: d.main_gpu,
        vision_device: DamVisionDevice::from(d.vision_device) as i32,
        repack: i32::from(d.repack),
        segmenter_path: ptr::null(),
    }
}

/// Default model parameters (all cores, f16 KV cache, no callbacks: quiet).
/// Any thread. Since API 1.3; the same as `dam_model_default_params`.
#[no_mangle]
pub extern "C" fn dam_model_params_default() -> DamModelParams {
    guard_default(model_params_default)
}

/// The 1.0 name of `dam_model_params_default` (same function); kept for
/// programs that use it.
#[no_mangle]
pub extern "C" fn dam_model_default_params() -> DamModelParams {
    dam_model_params_default()
}

/// Writes the default device parameters (main GPU 0, vision on the GPU)
/// into `*params`, `size` bytes of it: pass `sizeof(dam_device_params)`.
/// `DAM_STATUS_INVALID_ARGUMENT` for NULL or a `size` below the 1.2 struct,
/// `DAM_STATUS_VERSION_MISMATCH` for one above this library's. Any thread.
/// Since API 1.2.
#[no_mangle]
pub unsafe extern "C" fn dam_device_params_init(
    params: *mut DamDeviceParams,
    size: usize,
) -> DamStatus {
    guard(|| {
        if params.is_null() {
            return Err(invalid("params is NULL"));
        }
        check_struct_size(
            size,
            DEVICE_PARAMS_MIN,
            size_of::<DamDeviceParams>(),
            "params",
        )?;
        let mut d = device_params_default();
        d.struct_size = size as u32;
        // SAFETY: `params` is non-NULL and has `size` writable bytes by
        // contract; `d` has size_of::<DamDeviceParams>() >= size bytes.
        unsafe {
            ptr::copy_nonoverlapping(ptr::addr_of!(d).cast::<u8>(), params.cast::<u8>(), size)
        };
        Ok(())
    })
}

/// Engine parameters from the caller's model and device parameters.
fn model_params_of(p: &DamModelParams, d: &DamDeviceParams) -> Result<ModelParams, Fail> {
    let n_seq_max = match p.n_seq_max {
        0 => ModelParams::default().n_seq_max,
        n if n <= MAX_SEQUENCES => n,
        n => {
            return Err(invalid(format!(
                "params.n_seq_max {n} is out of range (0..={MAX_SEQUENCES})"
            )))
        }
    };
    let repack = match d.repack {
        0 => false,
        1 => true,
        k => return Err(invalid(format!("device.repack {k} is not 0 or 1"))),
    };
    if d.main_gpu < 0 {
        return Err(invalid(format!(
            "device.main_gpu {} is negative",
            d.main_gpu
        )));
    }
    Ok(ModelParams {
        threads: threads_of(p.n_threads)?,
        n_ctx: p.n_ctx,
        kv_type: enum_arg::<DamKvType>(p.kv_type, "params.kv_type")?.into(),
        flash_attn: enum_arg::<DamFlashAttn>(p.flash_attn, "params.flash_attn")?.into(),
        n_gpu_layers: p.n_gpu_layers,
        main_gpu: d.main_gpu,
        vision_device: enum_arg::<DamVisionDevice>(d.vision_device, "device.vision_device")?.into(),
        repack,
        n_seq_max,
        segmenter: None,
    })
}

/// The logger of the caller's log callback, if any.
fn logger_of(p: &DamModelParams) -> Result<Option<Logger>, Fail> {
    let level = LogLevel::from(enum_arg::<DamLogLevel>(p.log_level, "params.log_level")?);
    let Some(cb) = p.log_callback else {
        return Ok(None);
    };
    let user_data = UserData(p.log_user_data);
    Ok(Some(Logger::new(level, move |level, text| {
        let c = std::ffi::CString::new(text.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller's log callback with its own user data (the
        // header lets it be called from any thread that calls into the
        // model); `c` outlives the call.
        unsafe { cb(DamLogLevel::from(level), c.as_ptr(), user_data.get()) }
    })))
}

/// A caller's user-data pointer, passed back to its callback only.
#[derive(Clone, Copy)]
struct UserData(*mut std::ffi::c_void);

impl UserData {
    /// The pointer (a method, so that closures capture the whole wrapper).
    fn get(self) -> *mut std::ffi::c_void {
        self.0
    }
}

// SAFETY: dam never dereferences the pointer; it only hands it back to the
// caller's callback, which the header's contract requires to be callable
// from any thread that calls into the model.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

// ------------------------------------------------------------------ load, free

/// Loads a model from its two GGUF files (`*-llm-*.gguf`, `*-vision-*.gguf`),
/// memory-mapped. Pass `DAM_API_VERSION` as `api_version`: a library that
/// cannot serve that header returns `DAM_STATUS_VERSION_MISMATCH`. `params`
/// may be NULL (defaults). On success `*out_model` is a new model owned by
/// the caller (free it with `dam_model_free`); on failure it is set to NULL
/// (when `out_model` is not NULL). Any thread; several loads may run at once.
#[no_mangle]
pub unsafe extern "C" fn dam_model_load(
    api_version: u32,
    llm_path: *const c_char,
    vision_path: *const c_char,
    params: *const DamModelParams,
    out_model: *mut *mut DamModel,
) -> DamStatus {
    // SAFETY: forwarded contract; no device parameters.
    unsafe {
        dam_model_load_on(
            api_version,
            llm_path,
            vision_path,
            params,
            ptr::null(),
            out_model,
        )
    }
}

/// `dam_model_load` with device choices: `device` may be NULL (the
/// defaults of `dam_device_params_init`). Without a GPU the model runs on
/// the CPU (an info log line says so); a `main_gpu` beyond the GPUs found
/// is `DAM_STATUS_INVALID_ARGUMENT`. Since API 1.2.
#[no_mangle]
pub unsafe extern "C" fn dam_model_load_on(
    api_version: u32,
    llm_path: *const c_char,
    vision_path: *const c_char,
    params: *const DamModelParams,
    device: *const DamDeviceParams,
    out_model: *mut *mut DamModel,
) -> DamStatus {
    guard(|| {
        if out_model.is_null() {
            return Err(invalid("out_model is NULL"));
        }
        // SAFETY: non-NULL and writable by contract.
        unsafe { out_model.write_unaligned(ptr::null_mut()) };
        check_api_version(api_version)?;
        // SAFETY: NUL-terminated strings or NULL, by contract.
        let llm = unsafe { path_arg(llm_path, "llm_path") }?;
        // SAFETY: as above.
        let vision = unsafe { path_arg(vision_path, "vision_path") }?;
        // SAFETY: `params` is NULL or a dam_model_params of struct_size bytes.
        let p =
            unsafe { read_optional(params, model_params_default(), MODEL_PARAMS_MIN, "params") }?;
        // SAFETY: `device` is NULL or a dam_device_params of struct_size bytes.
        let d =
            unsafe { read_optional(device, device_params_default(), DEVICE_PARAMS_MIN, "device") }?;
        let mut mp = model_params_of(&p, &d)?;
        if !d.segmenter_path.is_null() {
            // SAFETY: a NUL-terminated string (contract; NULL checked).
            mp.segmenter = Some(unsafe { path_arg(d.segmenter_path, "device.segmenter_path") }?);
        }
        let logger = logger_of(&p)?;
        let _scope = log::enter(logger.clone());
        log::emit(
            LogLevel::Info,
            &format!("loading {} and {}", llm.display(), vision.display()),
        );
        let mut cancelled_by_callback = false;
        let mut progress = |stage| -> bool {
            let Some(cb) = p.progress_callback else {
                return true;
            };
            let (s, f) = DamLoadStage::of(stage);
            // SAFETY: the caller's progress callback with its user data.
            let go_on = unsafe { cb(s, f, p.progress_user_data) };
            cancelled_by_callback |= !go_on;
            go_on
        };
        let model = match Model::load_with_progress(&llm, &vision, mp, &mut progress) {
            Ok(m) => m,
            Err(Error::Cancelled) if cancelled_by_callback => {
                return Err(fail(
                    DamStatus::Cancelled,
                    "model load cancelled by the progress callback",
                ))
            }
            Err(e) => {
                log::emit(LogLevel::Error, &e.to_string());
                return Err(e.into());
            }
        };
        log::emit(
            LogLevel::Info,
            &format!("model loaded in {:.0} ms", model.load_ms),
        );
        let boxed = Box::new(DamModel {
            magic: MODEL_MAGIC,
            model,
            log: logger,
        });
        // SAFETY: writable by contract (checked non-NULL above).
        unsafe { out_model.write_unaligned(Box::into_raw(boxed)) };
        Ok(())
    })
}

/// Frees a model; NULL is a no-op. Sessions created from it stay usable
/// (they keep the weights alive until they are freed). No other call may use
/// this `model` pointer concurrently or afterwards.
#[no_mangle]
pub unsafe extern "C" fn dam_model_free(model: *mut DamModel) {
    guard_value((), || {
        // SAFETY: NULL or a live model by contract.
        if unsafe { model_ref(model) }.is_err() {
            return;
        }
        // SAFETY: a live model from `Box::into_raw` in `dam_model_load`,
        // owned by the caller who gives it up here.
        let mut b = unsafe { Box::from_raw(model) };
        b.magic = 0;
        drop(b);
    })
}

/// The most frames `dam_describe_video` takes with this model (8 for the
/// released models); 0 when `model` is NULL. Any thread.
#[no_mangle]
pub unsafe extern "C" fn dam_model_max_frames(model: *const DamModel) -> u32 {
    guard_value(0, || {
        // SAFETY: NULL or a live model by contract.
        unsafe { model_ref(model) }
            .map(|m| u32::try_from(m.model.max_frames()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    })
}
