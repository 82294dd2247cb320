//! Compute devices and the backend that allocates and runs one graph.

use std::ffi::{c_int, c_void, CStr};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::graph::{Graph, SCHED_SIZE};
use super::{ffi, text, Tensor};
use crate::error::{Error, Result};

/// A compute device of ggml's registry (a static registry entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    ptr: NonNull<ffi::ggml_backend_device>,
}

// SAFETY: registry devices are process-lifetime objects whose getters are
// thread-safe; the handle itself is a plain pointer.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

impl Device {
    pub(super) fn raw(&self) -> *mut ffi::ggml_backend_device {
        self.ptr.as_ptr()
    }
    pub fn name(&self) -> String {
        // SAFETY: a registry device; ggml returns a static string or null.
        text(unsafe { ffi::ggml_backend_dev_name(self.ptr.as_ptr()) })
    }
}

/// The GPUs of ggml's registry, in registry order (the order llama.cpp's
/// `main_gpu` indexes). Empty on CPU-only builds.
pub fn gpu_devices() -> Vec<Device> {
    crate::sys::llama::init_backend();
    // SAFETY: registry getters without preconditions; indices below the count.
    unsafe {
        (0..ffi::ggml_backend_dev_count())
            .filter_map(|i| NonNull::new(ffi::ggml_backend_dev_get(i)))
            .filter(|d| {
                matches!(
                    ffi::ggml_backend_dev_type(d.as_ptr()),
                    ffi::GGML_BACKEND_DEVICE_TYPE_GPU | ffi::GGML_BACKEND_DEVICE_TYPE_IGPU
                )
            })
            .map(|ptr| Device { ptr })
            .collect()
    }
}

/// The backends a graph runs on, scheduled by `ggml_backend_sched`: an
/// optional GPU first, then the CPU, which takes every op the GPU lacks.
/// Holds the compute buffers between calls and a cancel flag polled inside
/// CPU compute.
pub struct Backend {
    sched: NonNull<ffi::ggml_backend_sched>,
    /// The GPU backend, when the graph runs on one.
    gpu: Option<NonNull<ffi::ggml_backend>>,
    cpu: NonNull<ffi::ggml_backend>,
    /// The device of `gpu`.
    device: Option<Device>,
    cancel: Arc<AtomicBool>,
    /// The graph allocated last: the only one whose tensors have memory.
    current: Option<Allocated>,
}

/// What the backend knows of the graph it allocated.
struct Allocated {
    graph: u64,
    /// Inputs with memory whose data was not set yet (compute refuses to
    /// run on them: an unset index could be out of range).
    unset: Vec<NonNull<ffi::ggml_tensor>>,
    computed: bool,
}

// SAFETY: a backend is used by one thread at a time (&mut self for compute);
// moving it between threads is fine.
unsafe impl Send for Backend {}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed once, the scheduler before the
        // backends it refers to.
        unsafe {
            ffi::ggml_backend_sched_free(self.sched.as_ptr());
            if let Some(g) = self.gpu {
                ffi::ggml_backend_free(g.as_ptr());
            }
            ffi::ggml_backend_free(self.cpu.as_ptr());
        }
    }
}

unsafe extern "C" fn abort_cb(data: *mut std::ffi::c_void) -> bool {
    // SAFETY: `data` points to the AtomicBool inside the Arc owned by the
    // Backend, which outlives every compute call that can invoke this.
    let flag = unsafe { &*(data as *const AtomicBool) };
    flag.load(Ordering::Relaxed)
}

fn init_device(dev: NonNull<ffi::ggml_backend_device>) -> Result<NonNull<ffi::ggml_backend>> {
    // SAFETY: a registry device; null is handled.
    NonNull::new(unsafe { ffi::ggml_backend_dev_init(dev.as_ptr(), std::ptr::null()) }).ok_or_else(
        || {
            Error::Backend(format!(
                "cannot start the ggml backend of {}",
                Device { ptr: dev }.name()
            ))
        },
    )
}

impl Backend {
    /// The CPU with `threads` threads, and `gpu` when given (its weights
    /// must live in that GPU's memory or in host memory).
    pub fn new(threads: usize, cancel: Arc<AtomicBool>, gpu: Option<Device>) -> Result<Backend> {
        let cpu = init_device(cpu_device()?)?;
        let gpu_backend = match gpu.map(|d| init_device(d.ptr)).transpose() {
            Ok(g) => g,
            Err(e) => {
                // SAFETY: created just above, freed once.
                unsafe { ffi::ggml_backend_free(cpu.as_ptr()) };
                return Err(e);
            }
        };
        let mut list: Vec<ffi::ggml_backend_t> = gpu_backend.iter().map(|g| g.as_ptr()).collect();
        list.push(cpu.as_ptr());
        // SAFETY: 1 or 2 live backends, the CPU last as ggml requires; null
        // buffer types mean each backend's default; the graph size bounds
        // every graph built by `Graph`. op_offload stays off: weights are
        // already where they run.
        let sched = NonNull::new(unsafe {
            ffi::ggml_backend_sched_new(
                list.as_mut_ptr(),
                std::ptr::null_mut(),
                list.len() as c_int,
                SCHED_SIZE,
                false,
                false,
            )
        });
        let Some(sched) = sched else {
            // SAFETY: created above, freed once.
            unsafe {
                if let Some(g) = gpu_backend {
                    ffi::ggml_backend_free(g.as_ptr());
                }
                ffi::ggml_backend_free(cpu.as_ptr());
            }
            return Err(Error::Backend("ggml scheduler init failed".into()));
        };
        let b = Backend {
            sched,
            gpu: gpu_backend,
            cpu,
            device: gpu,
            cancel,
            current: None,
        };
        b.set_threads(threads);
        type SetAbort =
            unsafe extern "C" fn(ffi::ggml_backend_t, ffi::ggml_abort_callback, *mut c_void);
        // SAFETY: the CPU registry exports this name with exactly this
        // signature (ggml-cpu.cpp, `ggml_backend_cpu_get_proc_address`).
        if let Some(set_abort) = unsafe { cpu_proc::<SetAbort>(c"ggml_backend_set_abort_callback") }
        {
            // SAFETY: a CPU backend; the flag lives in an Arc held by `b`
            // for its whole life.
            unsafe {
                set_abort(
                    b.cpu.as_ptr(),
                    Some(abort_cb),
                    Arc::as_ptr(&b.cancel) as *mut c_void,
                )
            };
        }
        Ok(b)
    }

    pub fn set_threads(&self, threads: usize) {
        type SetThreads = unsafe extern "C" fn(ffi::ggml_backend_t, c_int);
        // SAFETY: the CPU registry exports this name with exactly this
        // signature (ggml-cpu.cpp, `ggml_backend_cpu_get_proc_address`).
        if let Some(set) = unsafe { cpu_proc::<SetThreads>(c"ggml_backend_set_n_threads") } {
            // SAFETY: a CPU backend and a thread count in ggml's range.
            unsafe { set(self.cpu.as_ptr(), threads.clamp(1, 512) as c_int) };
        }
    }

    /// Allocates the graph's tensors; call before setting inputs. The
    /// graph takes no new nodes afterwards, and the tensors of any graph
    /// allocated before lose their memory.
    pub fn alloc(&mut self, g: &Graph) -> Result<()> {
        if g.weights().device() != self.device {
            return Err(Error::InvalidArgument(
                "the backend runs on another device than the graph's weights".into(),
            ));
        }
        g.seal();
        self.current = None;
        // SAFETY: a live scheduler (reset first: it allocates one graph at a
        // time) and a graph whose node and leaf count fit its hash table
        // (`Graph` keeps both below MAX_NODES < SCHED_SIZE); the graph's
        // inputs and outputs are flagged, and sealed: it does not change
        // while allocated; every weight lives in a buffer of the device
        // this scheduler runs (host memory or its GPU, checked above).
        if !unsafe {
            ffi::ggml_backend_sched_reset(self.sched.as_ptr());
            ffi::ggml_backend_sched_alloc_graph(self.sched.as_ptr(), g.raw_graph())
        } {
            return Err(Error::Backend(
                "cannot allocate the compute graph (out of memory?)".into(),
            ));
        }
        let unset = g
            .inputs()
            .into_iter()
            .filter(|&p| {
                // SAFETY: an input header of the live graph `g`.
                let h = unsafe { p.as_ref() };
                !h.buffer.is_null() && !h.data.is_null()
            })
            .collect();
        self.current = Some(Allocated {
            graph: g.id(),
            unset,
            computed: false,
        });
        Ok(())
    }

    /// Checks that `t` is a tensor of `g`, the graph allocated last, and
    /// has memory.
    fn check_allocated(&mut self, g: &Graph, t: &Tensor<'_>, what: &str) -> Result<&mut Allocated> {
        let bad = |why: &str| Error::Backend(format!("{what} {}: {why}", t.name()));
        let cur = match &mut self.current {
            Some(c) if c.graph == g.id() => c,
            _ => return Err(bad("its graph is not the one allocated on this backend")),
        };
        if t.graph != g.id() {
            return Err(bad("a tensor of another graph"));
        }
        if !t.is_allocated() {
            return Err(bad("not part of the allocated graph"));
        }
        Ok(cur)
    }

    /// Copies `data` (the tensor's exact size) into an input of the
    /// allocated graph `g`.
    fn set<T: Copy>(&mut self, g: &Graph, t: Tensor<'_>, ty: u32, data: &[T]) -> Result<()> {
        let size = std::mem::size_of_val(data);
        let ok = g.inputs().contains(&t.ptr) && t.ty() == ty && size == t.nbytes();
        if !ok {
            return Err(Error::Backend(format!(
                "input {}: {} bytes for {:?} (type {})",
                t.name(),
                size,
                t.ne(),
                t.ty()
            )));
        }
        let cur = self.check_allocated(g, &t, "input")?;
        // SAFETY: an allocated input of the graph allocated last, whose
        // byte size is that of `data` (checked).
        unsafe { ffi::ggml_backend_tensor_set(t.raw(), data.as_ptr().cast(), 0, size) };
        cur.unset.retain(|&p| p != t.ptr);
        Ok(())
    }

    /// Copies f32 data into an f32 input of the allocated graph `g`.
    pub fn set_f32(&mut self, g: &Graph, t: Tensor<'_>, data: &[f32]) -> Result<()> {
        self.set(g, t, ffi::GGML_TYPE_F32, data)
    }

    /// Copies indices into an i32 input of the allocated graph `g`; each
    /// must index a row of every tensor the input selects rows of.
    pub fn set_i32(&mut self, g: &Graph, t: Tensor<'_>, data: &[i32]) -> Result<()> {
        let bound = g.index_bound(t);
        if data
            .iter()
            .any(|&i| i < 0 || bound.is_some_and(|b| i64::from(i) >= b))
        {
            return Err(Error::Backend(format!(
                "index input {}: an index outside 0..{}",
                t.name(),
                bound.unwrap_or(i64::MAX)
            )));
        }
        self.set(g, t, ffi::GGML_TYPE_I32, data)
    }

    /// Runs the allocated graph `g` once all its inputs are set. Returns
    /// `Cancelled` if the flag was raised.
    pub fn compute(&mut self, g: &Graph) -> Result<()> {
        let cur = match &mut self.current {
            Some(c) if c.graph == g.id() => c,
            _ => {
                return Err(Error::Backend(
                    "compute: the graph is not the one allocated on this backend".into(),
                ))
            }
        };
        if !cur.unset.is_empty() {
            return Err(Error::Backend(format!(
                "compute: {} input(s) not set",
                cur.unset.len()
            )));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        // SAFETY: the graph was allocated by `alloc` on this scheduler, is
        // sealed since, and every input holds data set through `set`.
        let st =
            unsafe { ffi::ggml_backend_sched_graph_compute(self.sched.as_ptr(), g.raw_graph()) };
        match st {
            ffi::GGML_STATUS_SUCCESS => {
                cur.computed = true;
                Ok(())
            }
            ffi::GGML_STATUS_ABORTED => Err(Error::Cancelled),
            s => Err(Error::Backend(format!(
                "graph compute failed with status {s}"
            ))),
        }
    }

    /// Reads an output of the computed graph `g` as f32 (must be a
    /// contiguous f32 output).
    pub fn get_f32(&mut self, g: &Graph, t: Tensor<'_>) -> Result<Vec<f32>> {
        if t.ty() != ffi::GGML_TYPE_F32 || !t.is_contiguous() || !g.outputs().contains(&t.ptr) {
            return Err(Error::Backend(format!(
                "{} is not a contiguous f32 output",
                t.name()
            )));
        }
        if !self.check_allocated(g, &t, "output")?.computed {
            return Err(Error::Backend(format!("output {}: not computed", t.name())));
        }
        let n = t.nelements() as usize;
        let mut out = vec![0f32; n];
        // SAFETY: an allocated output of the graph allocated and computed
        // last, contiguous f32 of n values (4 * n = its nbytes).
        unsafe { ffi::ggml_backend_tensor_get(t.raw(), out.as_mut_ptr().cast(), 0, 4 * n) };
        Ok(out)
    }

    /// Bytes of the compute buffers (CPU and GPU together).
    pub fn buffer_size(&self) -> usize {
        // SAFETY: a live scheduler and its own backends.
        unsafe {
            self.gpu
                .iter()
                .chain([&self.cpu])
                .map(|b| ffi::ggml_backend_sched_get_buffer_size(self.sched.as_ptr(), b.as_ptr()))
        }
        .sum()
    }
}

/// The CPU device of ggml's backend registry. Going through the registry
/// (not ggml-cpu.h) keeps dam working when the CPU backend is a module
/// loaded at run time (`dynamic-backends`).
pub(super) fn cpu_device() -> Result<NonNull<ffi::ggml_backend_device>> {
    crate::sys::llama::init_backend();
    // SAFETY: a registry lookup without preconditions; null is handled.
    NonNull::new(unsafe { ffi::ggml_backend_dev_by_type(ffi::GGML_BACKEND_DEVICE_TYPE_CPU) })
        .ok_or_else(|| {
            Error::Backend(
                "ggml has no CPU backend (with dynamic backends, is libggml-cpu*.so beside dam?)"
                    .into(),
            )
        })
}

/// A function the CPU backend registry exports by name.
///
/// # Safety
/// `F` must be the exact function-pointer type of the symbol `name`.
pub(super) unsafe fn cpu_proc<F: Copy>(name: &CStr) -> Option<F> {
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    let dev = cpu_device().ok()?;
    // SAFETY: a registry device and a NUL-terminated name; null is handled.
    let p = unsafe {
        let reg = ffi::ggml_backend_dev_backend_reg(dev.as_ptr());
        if reg.is_null() {
            return None;
        }
        ffi::ggml_backend_reg_get_proc_address(reg, name.as_ptr())
    };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null function address of type `F` (caller's contract);
    // function pointers and data pointers have the same size here.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Features of the CPU backend as ggml reports them (instruction sets it
/// was built for and found, e.g. `avx2`, `avx512_bf16`; `openmp`), lower
/// case.
pub fn cpu_features() -> Vec<String> {
    type GetFeatures =
        unsafe extern "C" fn(ffi::ggml_backend_reg_t) -> *const ffi::ggml_backend_feature;
    let mut v = Vec::new();
    let Ok(dev) = cpu_device() else {
        return v;
    };
    // SAFETY: the CPU registry exports this name with exactly this signature.
    let Some(get) = (unsafe { cpu_proc::<GetFeatures>(c"ggml_backend_get_features") }) else {
        return v;
    };
    // SAFETY: a registry device; `get` returns a static array terminated by
    // an entry with a NULL name, of NUL-terminated strings.
    unsafe {
        let reg = ffi::ggml_backend_dev_backend_reg(dev.as_ptr());
        let mut f = get(reg);
        while !f.is_null() && !(*f).name.is_null() {
            let name = CStr::from_ptr((*f).name).to_string_lossy().to_lowercase();
            let value = if (*f).value.is_null() {
                String::new()
            } else {
                CStr::from_ptr((*f).value).to_string_lossy().into_owned()
            };
            if value == "1" {
                v.push(name);
            }
            f = f.add(1);
        }
    }
    v
}

/// One compute device ggml knows (registered or loaded backends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub description: String,
    /// "cpu", "gpu", "igpu" or "accel".
    pub kind: &'static str,
    pub memory_free: usize,
    pub memory_total: usize,
}

/// Every device of ggml's backend registry.
pub fn devices() -> Vec<DeviceInfo> {
    crate::sys::llama::init_backend();
    // SAFETY: registry getters without preconditions; indices below the count.
    unsafe {
        (0..ffi::ggml_backend_dev_count())
            .filter_map(|i| {
                let d = ffi::ggml_backend_dev_get(i);
                if d.is_null() {
                    return None;
                }
                let (mut free, mut total) = (0usize, 0usize);
                ffi::ggml_backend_dev_memory(d, &mut free, &mut total);
                Some(DeviceInfo {
                    name: text(ffi::ggml_backend_dev_name(d)),
                    description: text(ffi::ggml_backend_dev_description(d)),
                    kind: match ffi::ggml_backend_dev_type(d) {
                        ffi::GGML_BACKEND_DEVICE_TYPE_CPU => "cpu",
                        ffi::GGML_BACKEND_DEVICE_TYPE_GPU => "gpu",
                        ffi::GGML_BACKEND_DEVICE_TYPE_IGPU => "igpu",
                        _ => "accel",
                    },
                    memory_free: free,
                    memory_total: total,
                })
            })
            .collect()
    }
}
