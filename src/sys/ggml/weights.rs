//! Weights: ggml tensors over a read-only file mapping (or copies on a GPU
//! or in a CPU repacking buffer), named by [`Weight`] handles.

use std::collections::HashMap;
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use super::backend::{cpu_device, cpu_proc, Device};
use super::{ffi, ggml_ctx, next_id};
use crate::error::{Error, Result};
use crate::gguf_file::TensorInfo;
use crate::sys::mmap::MappedFile;
use crate::sys::types::GgmlType;

/// A ggml context of tensor headers and the buffer that holds their data,
/// freed together.
struct Block {
    ctx: NonNull<ffi::ggml_context>,
    buf: Option<NonNull<ffi::ggml_backend_buffer>>,
    /// Tensor headers the context still has room for.
    room: usize,
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: both were created for this block only and are freed once,
        // the buffer first (it may refer to the context's tensors).
        unsafe {
            if let Some(b) = self.buf {
                ffi::ggml_backend_buffer_free(b.as_ptr());
            }
            ffi::ggml_free(self.ctx.as_ptr());
        }
    }
}

impl Block {
    /// A context with room for `n` tensor headers (no data).
    fn new(n: usize) -> Result<Block> {
        Ok(Block {
            ctx: ggml_ctx(n + 1, 0)?,
            buf: None,
            room: n,
        })
    }

    /// A header named `name` of type `ty` and shape `ne` (no data yet).
    fn tensor(
        &mut self,
        name: &str,
        ty: GgmlType,
        ne: &[u64],
    ) -> Result<NonNull<ffi::ggml_tensor>> {
        let bad = |why: &str| Error::InvalidModel(format!("tensor {name}: {why}"));
        if self.room == 0 {
            return Err(bad("no room in its context"));
        }
        if ne.is_empty() || ne.len() > 4 || ty.nbytes(ne).is_none() {
            return Err(bad(&format!("bad shape {ne:?} for {}", ty.name())));
        }
        let cname = CString::new(name).map_err(|_| bad("bad name"))?;
        let ne: Vec<i64> = ne.iter().map(|&d| d as i64).collect();
        // SAFETY: the context has room for one more header (counted in
        // `room`); the shape has 1-4 axes whose row size fits the type's
        // block size (checked above), so ggml_new_tensor's asserts hold.
        let p = unsafe {
            let p = ffi::ggml_new_tensor(self.ctx.as_ptr(), ty.raw(), ne.len() as i32, ne.as_ptr());
            if !p.is_null() {
                ffi::ggml_set_name(p, cname.as_ptr());
            }
            p
        };
        self.room -= 1;
        NonNull::new(p).ok_or_else(|| Error::Backend("ggml_new_tensor failed".into()))
    }
}

/// Weights whose data lives in a read-only file mapping (no copy), on a
/// GPU, or (matrices the CPU runs faster re-laid out) in one of the CPU's
/// repacking buffers.
pub struct MappedWeights {
    /// The mapped tensors (CPU) and each set of copies, with their buffers.
    blocks: Vec<Block>,
    /// Unique id, carried by the [`Weight`] handles of these weights.
    id: u64,
    /// Each tensor's index in `tensors` (the index a [`Weight`] holds).
    names: HashMap<String, usize>,
    tensors: Vec<NonNull<ffi::ggml_tensor>>,
    /// The GPU holding the tensors (`None`: host memory).
    device: Option<Device>,
    /// Tensors the CPU holds as repacked copies.
    n_repacked: usize,
    // Keeps the mapping alive as long as tensors point into it (dropped
    // after `blocks`, whose mapped buffer wraps it).
    map: Arc<MappedFile>,
}

// SAFETY: after construction the weights are never mutated; ggml only reads
// them during compute, from any thread.
unsafe impl Send for MappedWeights {}
// SAFETY: as above: shared read-only access.
unsafe impl Sync for MappedWeights {}

impl MappedWeights {
    /// Creates one ggml tensor per entry. Every entry must come from
    /// `GgufHeader::parse` on this mapping (offsets, sizes and types already
    /// checked against the file). With `device` `None` the tensors point
    /// into `map` (no copy); with a device (a GPU) they are uploaded once
    /// into one buffer of that device's memory.
    /// With `repack` (CPU only), matrices that one of the CPU's extra buffer
    /// types (ggml's AMX or repacked GEMM layouts) can multiply are copied
    /// into it, as llama.cpp does for its weights.
    pub fn new(
        map: Arc<MappedFile>,
        infos: &[&TensorInfo],
        device: Option<Device>,
        repack: bool,
    ) -> Result<Self> {
        let len = map.bytes().len();
        for t in infos {
            let end = t.offset.checked_add(t.nbytes);
            if end.is_none_or(|e| e > len as u64) || t.offset % 32 != 0 || t.ne.len() > 4 {
                return Err(Error::InvalidModel(format!(
                    "tensor {} lies outside the file",
                    t.name
                )));
            }
        }
        let mut weights = MappedWeights {
            blocks: Vec::new(),
            id: next_id(),
            names: HashMap::new(),
            tensors: Vec::new(),
            device,
            n_repacked: 0,
            map,
        };
        if let Some(dev) = device {
            // SAFETY: a live registry device; its default buffer type is static.
            let buft = unsafe { ffi::ggml_backend_dev_buffer_type(dev.raw()) };
            weights.copy_into(buft, infos).map_err(|e| {
                Error::Backend(format!(
                    "cannot load the vision weights on {}: {e}",
                    dev.name()
                ))
            })?;
            return Ok(weights);
        }
        let dev = cpu_device()?;
        weights.map_all(dev, infos)?;
        if repack {
            weights.repack(dev, infos)?;
        }
        Ok(weights)
    }

    /// Places every tensor at its bytes in the mapping (no copy).
    fn map_all(
        &mut self,
        dev: NonNull<ffi::ggml_backend_device>,
        infos: &[&TensorInfo],
    ) -> Result<()> {
        let bytes = self.map.bytes();
        let base = bytes.as_ptr() as *mut std::ffi::c_void;
        let max_tensor = infos.iter().map(|t| t.nbytes).max().unwrap_or(0) as usize;
        let mut block = Block::new(infos.len())?;
        // SAFETY: `base..base+len` is the live mapping kept alive by `map`
        // (dropped after the blocks), `dev` is the registry's CPU device
        // (static); the host-pointer buffer only wraps the mapping (it does
        // not free or write it: ggml never writes to weight tensors, and the
        // buffer is never cleared). The mapping is page-aligned, as ggml
        // requires.
        let buf = NonNull::new(unsafe {
            ffi::ggml_backend_dev_buffer_from_host_ptr(dev.as_ptr(), base, bytes.len(), max_tensor)
        })
        .ok_or_else(|| Error::Backend("cannot wrap the mapping in a ggml buffer".into()))?;
        block.buf = Some(buf);
        let mut placed = Vec::with_capacity(infos.len());
        for t in infos {
            let p = block.tensor(&t.name, t.ty, &t.ne)?;
            // SAFETY: `p` has the file's type and shape, so its nbytes is
            // `t.nbytes`, and [offset, offset+nbytes) lies inside the buffer
            // (checked in `new`), which is what ggml_backend_tensor_alloc
            // asserts.
            let ok = unsafe {
                let addr = base.cast::<u8>().add(t.offset as usize).cast();
                ffi::ggml_backend_tensor_alloc(buf.as_ptr(), p.as_ptr(), addr)
                    == ffi::GGML_STATUS_SUCCESS
            };
            if !ok {
                return Err(Error::Backend(format!("cannot place tensor {}", t.name)));
            }
            placed.push((t.name.clone(), p));
        }
        for (name, p) in placed {
            self.put(name, p);
        }
        self.blocks.push(block);
        Ok(())
    }

    /// Moves each matrix that a CPU extra buffer type supports into a copy
    /// in that type's buffer (its set_tensor re-lays the data out).
    fn repack(
        &mut self,
        dev: NonNull<ffi::ggml_backend_device>,
        infos: &[&TensorInfo],
    ) -> Result<()> {
        let bufts = extra_buffer_types(dev);
        let mut chosen: Vec<Vec<&TensorInfo>> = vec![Vec::new(); bufts.len()];
        for &t in infos {
            if let Some(k) = repacking_buffer(dev, &bufts, t) {
                chosen[k].push(t);
            }
        }
        for (buft, list) in bufts.into_iter().zip(chosen) {
            if !list.is_empty() {
                self.copy_into(buft, &list)?;
                self.n_repacked += list.len();
            }
        }
        Ok(())
    }

    /// Copies each listed tensor into one new buffer of type `buft`; the
    /// copies replace the tensors of those names.
    fn copy_into(
        &mut self,
        buft: ffi::ggml_backend_buffer_type_t,
        list: &[&TensorInfo],
    ) -> Result<()> {
        let mut block = Block::new(list.len())?;
        let made = list
            .iter()
            .map(|t| block.tensor(&t.name, t.ty, &t.ne))
            .collect::<Result<Vec<_>>>()?;
        // SAFETY: a metadata context whose tensors have no data yet and a
        // buffer type of a registry device; null (out of memory, or nothing
        // to allocate) is handled.
        let buf = NonNull::new(unsafe {
            ffi::ggml_backend_alloc_ctx_tensors_from_buft(block.ctx.as_ptr(), buft)
        })
        .ok_or_else(|| Error::Backend("cannot allocate the weights (out of memory?)".into()))?;
        block.buf = Some(buf);
        // SAFETY: a live buffer; the usage is a hint for the scheduler.
        unsafe {
            ffi::ggml_backend_buffer_set_usage(buf.as_ptr(), ffi::GGML_BACKEND_BUFFER_USAGE_WEIGHTS)
        };
        let bytes = self.map.bytes();
        for (t, p) in list.iter().zip(&made) {
            let data = &bytes[t.offset as usize..(t.offset + t.nbytes) as usize];
            // SAFETY: `p` is allocated in `buf` for its type and shape; the
            // copy happens only when `data` (inside the live mapping,
            // checked in `new`) has exactly its byte size.
            unsafe {
                if ffi::ggml_nbytes(p.as_ptr()) != data.len() {
                    return Err(Error::Backend(format!("{}: size mismatch", t.name)));
                }
                ffi::ggml_backend_tensor_set(p.as_ptr(), data.as_ptr().cast(), 0, data.len());
            }
            // The copy replaces the mapped tensor: its file pages need not
            // stay resident (peak memory ~ files, not files + copies).
            self.map.release(t.offset as usize, t.nbytes as usize);
        }
        for (t, p) in list.iter().zip(made) {
            self.put(t.name.clone(), p);
        }
        self.blocks.push(block);
        Ok(())
    }

    /// How many tensors the CPU holds as copies out of the mapping, in a
    /// repacking buffer (see `repack`).
    pub fn n_repacked(&self) -> usize {
        self.n_repacked
    }

    /// Adds the tensor `name`, or replaces it by a copy (`Weight` handles
    /// keep their index).
    fn put(&mut self, name: String, p: NonNull<ffi::ggml_tensor>) {
        match self.names.get(&name) {
            Some(&i) => self.tensors[i] = p,
            None => {
                self.names.insert(name, self.tensors.len());
                self.tensors.push(p);
            }
        }
    }

    /// The handle of the tensor `name`, resolved once (at load) so graphs
    /// take weights by index.
    pub fn weight(&self, name: &str) -> Result<Weight> {
        self.names
            .get(name)
            .map(|&index| Weight {
                owner: self.id,
                index,
            })
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))
    }

    /// The tensor of a handle of these weights.
    pub(super) fn tensor(&self, w: Weight) -> Option<NonNull<ffi::ggml_tensor>> {
        (w.owner == self.id)
            .then(|| self.tensors.get(w.index).copied())
            .flatten()
    }

    /// The GPU holding the weights (`None`: host memory).
    pub fn device(&self) -> Option<Device> {
        self.device
    }

    /// Shape (ggml order) of a weight of these weights.
    pub fn ne(&self, w: Weight) -> Result<[i64; 4]> {
        let p = self
            .tensor(w)
            .ok_or_else(|| Error::InvalidModel("a weight of another model".into()))?;
        // SAFETY: a tensor header of these weights (alive with `self`, never
        // written after construction).
        Ok(unsafe { p.as_ref() }.ne)
    }

    /// Reads a whole f32 weight (small tensors: gates, norms).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let p = self.tensors[self.weight(name)?.index];
        // SAFETY: a tensor header of these weights (see `ne`).
        let h = unsafe { p.as_ref() };
        if h.type_ != ffi::GGML_TYPE_F32 {
            return Err(Error::InvalidModel(format!("{name} is not f32")));
        }
        let n: i64 = h.ne.iter().product();
        let mut out = vec![0f32; n as usize];
        // SAFETY: the tensor is allocated (in the mapping or on a device)
        // and holds exactly n f32 values, n * 4 = its nbytes.
        unsafe {
            ffi::ggml_backend_tensor_get(p.as_ptr(), out.as_mut_ptr().cast(), 0, 4 * n as usize)
        };
        Ok(out)
    }
}

/// A weight of one [`MappedWeights`], resolved by name once; a graph over
/// those weights turns it into a [`Tensor`](super::Tensor)
/// ([`Graph::weight`](super::Graph::weight)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weight {
    owner: u64,
    index: usize,
}

impl Weight {
    /// The id of the weights this handle belongs to.
    pub(super) fn owner(&self) -> u64 {
        self.owner
    }
}

/// The first of `bufts` that takes the matrix `t` (2-D, not f32), if any.
fn repacking_buffer(
    dev: NonNull<ffi::ggml_backend_device>,
    bufts: &[ffi::ggml_backend_buffer_type_t],
    t: &TensorInfo,
) -> Option<usize> {
    if t.ne.len() != 2 || t.ty == GgmlType::F32 {
        return None;
    }
    bufts
        .iter()
        .position(|&b| supports_matmul(dev, b, t.ty, &t.ne))
}

/// Whether the CPU's extra buffer types (AMX, repacked GEMM layouts) take
/// any of these matrices: the choice `MappedWeights::new` with `repack`
/// makes, and llama.cpp's with extra buffer types.
pub fn cpu_repacks_any<'a>(infos: impl IntoIterator<Item = &'a TensorInfo>) -> Result<bool> {
    let dev = cpu_device()?;
    let bufts = extra_buffer_types(dev);
    Ok(infos
        .into_iter()
        .any(|t| repacking_buffer(dev, &bufts, t).is_some()))
}

/// The CPU's extra buffer types (AMX, repacked GEMM layouts; empty when
/// the CPU backend has none for this machine).
fn extra_buffer_types(
    dev: NonNull<ffi::ggml_backend_device>,
) -> Vec<ffi::ggml_backend_buffer_type_t> {
    type GetExtra =
        unsafe extern "C" fn(ffi::ggml_backend_dev_t) -> *mut ffi::ggml_backend_buffer_type_t;
    // SAFETY: the CPU registry exports this name with exactly this signature
    // (ggml-cpu.cpp, `ggml_backend_cpu_get_proc_address`).
    let Some(get) = (unsafe { cpu_proc::<GetExtra>(c"ggml_backend_dev_get_extra_bufts") }) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    // SAFETY: a registry device; ggml returns a static NULL-terminated array.
    unsafe {
        let mut p = get(dev.as_ptr());
        while !p.is_null() && !(*p).is_null() {
            v.push(*p);
            p = p.add(1);
        }
    }
    v
}

/// Whether the CPU multiplies `t` (as a weight, by f32 activations) when it
/// lives in a buffer of `buft`: asked of ggml on a probe node, as llama.cpp
/// does before placing a weight there.
fn supports_matmul(
    dev: NonNull<ffi::ggml_backend_device>,
    buft: ffi::ggml_backend_buffer_type_t,
    ty: GgmlType,
    ne: &[u64],
) -> bool {
    if ne.len() != 2 || ty.nbytes(ne).is_none() {
        return false;
    }
    let Ok(ctx) = ggml_ctx(3, 0) else {
        return false;
    };
    let ne: Vec<i64> = ne.iter().map(|&d| d as i64).collect();
    // SAFETY: a metadata-only context with room for 3 tensors; the shapes
    // are a validated 2-D weight and a matching f32 input, which satisfy
    // ggml_mul_mat's preconditions. The zero-size buffer is a placeholder
    // that only tells supports_op the weight's buffer type; it is detached
    // and freed before the context.
    unsafe {
        let w = ffi::ggml_new_tensor(ctx.as_ptr(), ty.raw(), 2, ne.as_ptr());
        let x = ffi::ggml_new_tensor_2d(ctx.as_ptr(), ffi::GGML_TYPE_F32, ne[0], 32);
        let mut ok = false;
        if !w.is_null() && !x.is_null() {
            let op = ffi::ggml_mul_mat(ctx.as_ptr(), w, x);
            let buf = ffi::ggml_backend_buft_alloc_buffer(buft, 0);
            if !op.is_null() && !buf.is_null() {
                (*w).buffer = buf;
                ok = ffi::ggml_backend_dev_supports_op(dev.as_ptr(), op);
                (*w).buffer = std::ptr::null_mut();
            }
            if !buf.is_null() {
                ffi::ggml_backend_buffer_free(buf);
            }
        }
        ffi::ggml_free(ctx.as_ptr());
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_refuse_what_ggml_would_abort_on() {
        let mut b = Block::new(2).unwrap();
        // A q8_0 row of 40 is not whole blocks.
        assert!(b.tensor("a", GgmlType::Q8_0, &[40, 2]).is_err());
        assert!(b.tensor("a", GgmlType::F32, &[]).is_err());
        assert!(b.tensor("a", GgmlType::F32, &[1, 1, 1, 1, 1]).is_err());
        assert!(b.tensor("a\0b", GgmlType::F32, &[4]).is_err());
        b.tensor("a", GgmlType::Q8_0, &[32, 2]).unwrap();
        b.tensor("b", GgmlType::F16, &[3]).unwrap();
        // The context is full: an error, not ggml's out-of-memory abort.
        assert!(b.tensor("c", GgmlType::F32, &[1]).is_err());
    }
}
