//! A safe layer over the parts of ggml that the vision graph uses: weights
//! pointing into a memory mapping, a graph builder whose ops check ggml's
//! shape preconditions first (a failed ggml assert aborts the host process),
//! and a CPU backend that allocates, computes and can be cancelled.

use std::ffi::{c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::ffi;
use super::mmap::MappedFile;
use super::types::GgmlType;
use crate::error::{Error, Result};
use crate::gguf_file::TensorInfo;

/// A tensor of a ggml context: weights or a graph node. Copyable handle; the
/// lifetime ties it to the context (weights or graph) that owns it.
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    ptr: NonNull<ffi::ggml_tensor>,
    _ctx: PhantomData<&'a ()>,
}

impl<'a> Tensor<'a> {
    fn raw(&self) -> *mut ffi::ggml_tensor {
        self.ptr.as_ptr()
    }
    fn header(&self) -> &ffi::ggml_tensor {
        // SAFETY: the pointer comes from a live ggml context (the lifetime
        // guarantees it outlives this handle), and ggml tensor headers are
        // plain data only mutated while a graph is built through `&mut Graph`.
        unsafe { self.ptr.as_ref() }
    }
    /// Shape in ggml order.
    pub fn ne(&self) -> [i64; 4] {
        self.header().ne
    }
    pub fn nb(&self) -> [usize; 4] {
        self.header().nb
    }
    pub fn ty(&self) -> u32 {
        self.header().type_
    }
    pub fn nelements(&self) -> i64 {
        self.ne().iter().product()
    }
    pub fn nbytes(&self) -> usize {
        // SAFETY: a valid tensor header.
        unsafe { ffi::ggml_nbytes(self.raw()) }
    }
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: a valid tensor header.
        unsafe { ffi::ggml_is_contiguous(self.raw()) }
    }
    pub fn name(&self) -> String {
        let n = &self.header().name;
        let bytes: Vec<u8> = n
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn ggml_ctx(n_tensors: usize, graph_nodes: usize) -> Result<NonNull<ffi::ggml_context>> {
    // SAFETY: pure size computations.
    let mem = unsafe {
        n_tensors * ffi::ggml_tensor_overhead()
            + if graph_nodes > 0 {
                ffi::ggml_graph_overhead_custom(graph_nodes, false)
            } else {
                0
            }
    } + 1024;
    let params = ffi::ggml_init_params {
        mem_size: mem,
        mem_buffer: std::ptr::null_mut(),
        no_alloc: true,
    };
    // SAFETY: a metadata-only context (no_alloc); null is handled.
    NonNull::new(unsafe { ffi::ggml_init(params) })
        .ok_or_else(|| Error::Backend("ggml_init failed".into()))
}

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
    tensors: std::collections::HashMap<String, NonNull<ffi::ggml_tensor>>,
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
            tensors: Default::default(),
            n_repacked: 0,
            map,
        };
        if let Some(dev) = device {
            // SAFETY: a live registry device; its default buffer type is static.
            let buft = unsafe { ffi::ggml_backend_dev_buffer_type(dev.ptr.as_ptr()) };
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
        self.tensors.extend(placed);
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
            if t.ne.len() == 2 && t.ty != GgmlType::F32 {
                if let Some(k) = bufts
                    .iter()
                    .position(|&b| supports_matmul(dev, b, t.ty, &t.ne))
                {
                    chosen[k].push(t);
                }
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
        }
        for (t, p) in list.iter().zip(made) {
            self.tensors.insert(t.name.clone(), p);
        }
        self.blocks.push(block);
        Ok(())
    }

    /// How many tensors the CPU holds as copies out of the mapping, in a
    /// repacking buffer (see `repack`).
    pub fn n_repacked(&self) -> usize {
        self.n_repacked
    }

    pub fn get(&self, name: &str) -> Result<Tensor<'_>> {
        self.tensors
            .get(name)
            .map(|&ptr| Tensor {
                ptr,
                _ctx: PhantomData,
            })
            .ok_or_else(|| Error::InvalidModel(format!("missing tensor {name}")))
    }

    /// Reads a whole f32 weight (small tensors: gates, norms).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.ty() != ffi::GGML_TYPE_F32 {
            return Err(Error::InvalidModel(format!("{name} is not f32")));
        }
        let mut out = vec![0f32; t.nelements() as usize];
        // SAFETY: the tensor is allocated (in the mapping or on a device)
        // and holds exactly nelements f32 values.
        unsafe { ffi::ggml_backend_tensor_get(t.raw(), out.as_mut_ptr().cast(), 0, t.nbytes()) };
        Ok(out)
    }
}

/// Unary operations the graph uses.
#[derive(Clone, Copy, Debug)]
pub enum Unary {
    Tanh,
    Sqr,
    /// ggml's GELU (tanh form) from an f16 lookup table: fast, ~1e-3 error.
    GeluTable,
    /// Exact GELU with erf.
    GeluErf,
}

fn err(op: &str, msg: String) -> Error {
    Error::Backend(format!("graph {op}: {msg}"))
}

/// Builds one compute graph. Each op checks ggml's preconditions and names
/// its node `<scope><op>`, so every node carries a debug name.
pub struct Graph {
    ctx: NonNull<ffi::ggml_context>,
    gf: NonNull<ffi::ggml_cgraph>,
    scope: String,
    inputs: Vec<NonNull<ffi::ggml_tensor>>,
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed once; the graph lives in the context.
        unsafe { ffi::ggml_free(self.ctx.as_ptr()) };
    }
}

/// Node budget of one graph (the tower has ~40 nodes per layer and branch).
const MAX_NODES: usize = 1 << 16;
/// The scheduler's table size: room for MAX_NODES nodes and their leaves.
const SCHED_SIZE: usize = 2 * MAX_NODES;

impl Graph {
    pub fn new() -> Result<Graph> {
        let ctx = ggml_ctx(MAX_NODES, MAX_NODES)?;
        // SAFETY: the context was sized for a graph of MAX_NODES nodes.
        let gf =
            NonNull::new(unsafe { ffi::ggml_new_graph_custom(ctx.as_ptr(), MAX_NODES, false) })
                .ok_or_else(|| Error::Backend("ggml_new_graph failed".into()))?;
        Ok(Graph {
            ctx,
            gf,
            scope: String::new(),
            inputs: Vec::new(),
        })
    }

    /// Prefix for the names of the nodes created next.
    pub fn set_scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }

    fn wrap<'a>(&mut self, p: *mut ffi::ggml_tensor, op: &str) -> Result<Tensor<'a>> {
        let ptr = NonNull::new(p)
            .ok_or_else(|| err(op, "ggml returned null (out of graph memory?)".into()))?;
        let t = Tensor {
            ptr,
            _ctx: PhantomData,
        };
        self.name(t, &format!("{}{op}", self.scope));
        Ok(t)
    }

    /// Names a node (truncated to ggml's 63 bytes).
    pub fn name(&mut self, t: Tensor<'_>, name: &str) {
        let mut n: Vec<u8> = name.bytes().filter(|&b| b != 0).take(63).collect();
        n.push(0);
        // SAFETY: NUL-terminated, at most 64 bytes; ggml copies it.
        unsafe { ffi::ggml_set_name(t.raw(), n.as_ptr().cast()) };
    }

    /// A new f32 or i32 input tensor (data set at compute time).
    pub fn input<'a>(&mut self, name: &str, ty: GgmlType, ne: &[i64]) -> Result<Tensor<'a>> {
        if ne.is_empty() || ne.len() > 4 || ne.iter().any(|&d| d <= 0) {
            return Err(err("input", format!("bad shape {ne:?}")));
        }
        if !matches!(ty, GgmlType::F32) && ty.raw() != ffi::GGML_TYPE_I32 {
            return Err(err("input", "only f32 inputs".into()));
        }
        // SAFETY: valid context, shape checked.
        let p = unsafe {
            ffi::ggml_new_tensor(self.ctx.as_ptr(), ty.raw(), ne.len() as i32, ne.as_ptr())
        };
        let t = self.wrap(p, "input")?;
        self.name(t, name);
        // SAFETY: a tensor of this context.
        unsafe { ffi::ggml_set_input(t.raw()) };
        self.inputs.push(t.ptr);
        Ok(t)
    }

    /// A new i32 input tensor (indices).
    pub fn input_i32<'a>(&mut self, name: &str, n: i64) -> Result<Tensor<'a>> {
        if n <= 0 {
            return Err(err("input", "empty index tensor".into()));
        }
        // SAFETY: valid context and size.
        let p = unsafe { ffi::ggml_new_tensor_1d(self.ctx.as_ptr(), ffi::GGML_TYPE_I32, n) };
        let t = self.wrap(p, "input")?;
        self.name(t, name);
        // SAFETY: a tensor of this context.
        unsafe { ffi::ggml_set_input(t.raw()) };
        self.inputs.push(t.ptr);
        Ok(t)
    }

    /// Marks a result that must survive the computation and adds it to the graph.
    pub fn output(&mut self, t: Tensor<'_>, name: &str) {
        self.name(t, name);
        // SAFETY: a node of this graph's context.
        unsafe {
            ffi::ggml_set_output(t.raw());
            ffi::ggml_build_forward_expand(self.gf.as_ptr(), t.raw());
        }
    }

    pub fn n_nodes(&self) -> i32 {
        // SAFETY: valid graph.
        unsafe { ffi::ggml_graph_n_nodes(self.gf.as_ptr()) }
    }

    // ---- ops -------------------------------------------------------------

    /// `a @ b` in ggml's sense: result [a.ne1, b.ne1, b.ne2, b.ne3].
    pub fn mul_mat<'a>(&mut self, a: Tensor<'_>, b: Tensor<'_>) -> Result<Tensor<'a>> {
        let (x, y) = (a.ne(), b.ne());
        if x[0] != y[0] || y[2] % x[2] != 0 || y[3] % x[3] != 0 {
            return Err(err("mul_mat", format!("{x:?} x {y:?}")));
        }
        // SAFETY: shapes satisfy ggml_can_mul_mat; `a` is never transposed here
        // (weights and permuted-then-cont tensors only).
        let p = unsafe { ffi::ggml_mul_mat(self.ctx.as_ptr(), a.raw(), b.raw()) };
        self.wrap(p, "mul_mat")
    }

    fn check_repeat(op: &str, a: Tensor<'_>, b: Tensor<'_>) -> Result<()> {
        let (x, y) = (a.ne(), b.ne());
        if (0..4).any(|i| x[i] % y[i] != 0) || a.ty() != ffi::GGML_TYPE_F32 {
            return Err(err(op, format!("cannot broadcast {y:?} to {x:?}")));
        }
        Ok(())
    }

    /// `a + b`, `b` broadcast over `a`.
    pub fn add<'a>(&mut self, a: Tensor<'_>, b: Tensor<'_>) -> Result<Tensor<'a>> {
        Self::check_repeat("add", a, b)?;
        // SAFETY: b can be repeated to a's shape (checked).
        let p = unsafe { ffi::ggml_add(self.ctx.as_ptr(), a.raw(), b.raw()) };
        self.wrap(p, "add")
    }

    /// `a * b` elementwise, `b` broadcast over `a`.
    pub fn mul<'a>(&mut self, a: Tensor<'_>, b: Tensor<'_>) -> Result<Tensor<'a>> {
        Self::check_repeat("mul", a, b)?;
        // SAFETY: b can be repeated to a's shape (checked).
        let p = unsafe { ffi::ggml_mul(self.ctx.as_ptr(), a.raw(), b.raw()) };
        self.wrap(p, "mul")
    }

    /// `a * s + b`.
    pub fn scale_bias<'a>(&mut self, a: Tensor<'_>, s: f32, b: f32) -> Result<Tensor<'a>> {
        // SAFETY: no shape precondition.
        let p = unsafe { ffi::ggml_scale_bias(self.ctx.as_ptr(), a.raw(), s, b) };
        self.wrap(p, "scale")
    }

    /// Normalises each row to zero mean, unit variance.
    pub fn norm<'a>(&mut self, a: Tensor<'_>, eps: f32) -> Result<Tensor<'a>> {
        // SAFETY: no shape precondition.
        let p = unsafe { ffi::ggml_norm(self.ctx.as_ptr(), a.raw(), eps) };
        self.wrap(p, "norm")
    }

    pub fn unary<'a>(&mut self, a: Tensor<'_>, op: Unary) -> Result<Tensor<'a>> {
        if !a.is_contiguous() {
            return Err(err("unary", "input is not contiguous".into()));
        }
        let c = self.ctx.as_ptr();
        // SAFETY: unary ops need a contiguous input (checked).
        let (p, name) = unsafe {
            match op {
                Unary::Tanh => (ffi::ggml_tanh(c, a.raw()), "tanh"),
                Unary::Sqr => (ffi::ggml_sqr(c, a.raw()), "sqr"),
                Unary::GeluTable => (ffi::ggml_gelu(c, a.raw()), "gelu"),
                Unary::GeluErf => (ffi::ggml_gelu_erf(c, a.raw()), "gelu_erf"),
            }
        };
        self.wrap(p, name)
    }

    pub fn cont<'a>(&mut self, a: Tensor<'_>) -> Result<Tensor<'a>> {
        // SAFETY: no precondition.
        let p = unsafe { ffi::ggml_cont(self.ctx.as_ptr(), a.raw()) };
        self.wrap(p, "cont")
    }

    /// Reshape of a contiguous tensor (same element count).
    pub fn reshape<'a>(&mut self, a: Tensor<'_>, ne: &[i64]) -> Result<Tensor<'a>> {
        let n: i64 = ne.iter().product();
        if !a.is_contiguous()
            || n != a.nelements()
            || ne.is_empty()
            || ne.len() > 4
            || ne.iter().any(|&d| d <= 0)
        {
            return Err(err("reshape", format!("{:?} to {ne:?}", a.ne())));
        }
        let c = self.ctx.as_ptr();
        // SAFETY: contiguous input with the same number of elements (checked).
        let p = unsafe {
            match *ne {
                [a0] => ffi::ggml_reshape_1d(c, a.raw(), a0),
                [a0, a1] => ffi::ggml_reshape_2d(c, a.raw(), a0, a1),
                [a0, a1, a2] => ffi::ggml_reshape_3d(c, a.raw(), a0, a1, a2),
                [a0, a1, a2, a3] => ffi::ggml_reshape_4d(c, a.raw(), a0, a1, a2, a3),
                _ => std::ptr::null_mut(),
            }
        };
        self.wrap(p, "reshape")
    }

    /// Source axis i goes to position `axes[i]`.
    pub fn permute<'a>(&mut self, a: Tensor<'_>, axes: [i32; 4]) -> Result<Tensor<'a>> {
        let mut seen = [false; 4];
        for &x in &axes {
            if !(0..4).contains(&x) || seen[x as usize] {
                return Err(err("permute", format!("axes {axes:?}")));
            }
            seen[x as usize] = true;
        }
        // SAFETY: axes are a permutation of 0..4 (checked).
        let p = unsafe {
            ffi::ggml_permute(
                self.ctx.as_ptr(),
                a.raw(),
                axes[0],
                axes[1],
                axes[2],
                axes[3],
            )
        };
        self.wrap(p, "permute")
    }

    /// A view of `ne` elements with strides `nb` (bytes) at `offset` bytes.
    pub fn view<'a>(
        &mut self,
        a: Tensor<'_>,
        ne: [i64; 4],
        nb: [usize; 3],
        offset: usize,
    ) -> Result<Tensor<'a>> {
        if ne.iter().any(|&d| d <= 0) {
            return Err(err("view", format!("shape {ne:?}")));
        }
        // Last byte touched must lie inside the source.
        let esize = a.nb()[0];
        let last = (ne[1] as usize - 1) * nb[0]
            + (ne[2] as usize - 1) * nb[1]
            + (ne[3] as usize - 1) * nb[2]
            + ne[0] as usize * esize;
        if offset + last > a.nbytes() || a.ty() != ffi::GGML_TYPE_F32 {
            return Err(err(
                "view",
                format!("{ne:?} at {offset} outside {:?}", a.ne()),
            ));
        }
        // SAFETY: the view lies inside the source tensor (checked).
        let p = unsafe {
            ffi::ggml_view_4d(
                self.ctx.as_ptr(),
                a.raw(),
                ne[0],
                ne[1],
                ne[2],
                ne[3],
                nb[0],
                nb[1],
                nb[2],
                offset,
            )
        };
        self.wrap(p, "view")
    }

    /// Row-wise softmax of `a * scale + mask`.
    pub fn soft_max_ext<'a>(
        &mut self,
        a: Tensor<'_>,
        mask: Option<Tensor<'_>>,
        scale: f32,
    ) -> Result<Tensor<'a>> {
        if !a.is_contiguous() {
            return Err(err("soft_max", "input is not contiguous".into()));
        }
        if let Some(m) = mask {
            let (x, y) = (a.ne(), m.ne());
            if y[0] != x[0]
                || y[1] < x[1]
                || x[2] % y[2] != 0
                || x[3] % y[3] != 0
                || !m.is_contiguous()
            {
                return Err(err("soft_max", format!("mask {y:?} for {x:?}")));
            }
        }
        let mp = mask.map_or(std::ptr::null_mut(), |m| m.raw());
        // SAFETY: contiguous input and a compatible (or no) mask (checked).
        let p = unsafe { ffi::ggml_soft_max_ext(self.ctx.as_ptr(), a.raw(), mp, scale, 0.0) };
        self.wrap(p, "soft_max")
    }

    /// Non-overlapping patch embedding (a stride-`P` convolution without
    /// padding): kernel [P, P, IC, OC], input [W, H, IC, N] -> [OC, OW*OH, N],
    /// tokens row-major. Unlike `ggml_conv_2d`, the im2col stays f32
    /// (ggml's conv_2d rounds it to f16).
    pub fn patch_embed<'a>(&mut self, kernel: Tensor<'_>, input: Tensor<'_>) -> Result<Tensor<'a>> {
        let (k, x) = (kernel.ne(), input.ne());
        if k[2] != x[2]
            || k[0] != k[1]
            || k[0] > x[0]
            || k[1] > x[1]
            || kernel.ty() != ffi::GGML_TYPE_F32
            || !kernel.is_contiguous()
        {
            return Err(err("patch_embed", format!("kernel {k:?} on {x:?}")));
        }
        let p = k[0] as i32;
        // SAFETY: channels agree and the output is non-empty (checked).
        let cols = unsafe {
            ffi::ggml_im2col(
                self.ctx.as_ptr(),
                kernel.raw(),
                input.raw(),
                p,
                p,
                0,
                0,
                1,
                1,
                true,
                ffi::GGML_TYPE_F32,
            )
        };
        let cols = self.wrap(cols, "im2col")?; // [IC*P*P, OW, OH, N]
        let [kk, ow, oh, n] = cols.ne();
        let cols = self.reshape(cols, &[kk, ow * oh * n])?;
        let w = self.reshape(kernel, &[kk, k[3]])?;
        let y = self.mul_mat(w, cols)?; // [OC, OW*OH*N]
        self.reshape(y, &[k[3], ow * oh, n])
    }

    /// Converts to f16 (for flash attention's K and V).
    pub fn cast_f16<'a>(&mut self, a: Tensor<'_>) -> Result<Tensor<'a>> {
        if a.ty() != ffi::GGML_TYPE_F32 {
            return Err(err("cast", "only f32 -> f16".into()));
        }
        // SAFETY: f32 -> f16 is a supported conversion; no shape precondition.
        let p = unsafe { ffi::ggml_cast(self.ctx.as_ptr(), a.raw(), ffi::GGML_TYPE_F16) };
        self.wrap(p, "cast")
    }

    /// Fused attention without a mask: q [D, Nq, H, B] f32, k and v
    /// [D, Nk, H, B] f16 -> [D, H, Nq, B] (heads before tokens). Softmax and
    /// accumulation in f32.
    pub fn flash_attn<'a>(
        &mut self,
        q: Tensor<'_>,
        k: Tensor<'_>,
        v: Tensor<'_>,
        scale: f32,
    ) -> Result<Tensor<'a>> {
        let (x, y, z) = (q.ne(), k.ne(), v.ne());
        if q.ty() != ffi::GGML_TYPE_F32
            || k.ty() != ffi::GGML_TYPE_F16
            || v.ty() != ffi::GGML_TYPE_F16
            || x[0] != y[0]
            || y != z
            || x[2] % y[2] != 0
            || x[3] != y[3]
        {
            return Err(err("flash_attn", format!("q {x:?} k {y:?} v {z:?}")));
        }
        // SAFETY: shapes and types as ggml_flash_attn_ext requires (checked).
        let p = unsafe {
            let t = ffi::ggml_flash_attn_ext(
                self.ctx.as_ptr(),
                q.raw(),
                k.raw(),
                v.raw(),
                std::ptr::null_mut(),
                scale,
                0.0,
                0.0,
            );
            if !t.is_null() {
                ffi::ggml_flash_attn_ext_set_prec(t, ffi::GGML_PREC_F32);
            }
            t
        };
        self.wrap(p, "flash_attn")
    }

    /// Rows of a 2-D `a` picked by the i32 indices `idx`.
    pub fn get_rows<'a>(&mut self, a: Tensor<'_>, idx: Tensor<'_>) -> Result<Tensor<'a>> {
        let (x, i) = (a.ne(), idx.ne());
        if idx.ty() != ffi::GGML_TYPE_I32
            || x[2] != 1
            || x[3] != 1
            || i[1] != 1
            || i[2] != 1
            || i[3] != 1
        {
            return Err(err("get_rows", format!("{x:?} by {i:?}")));
        }
        // SAFETY: i32 indices over a 2-D source (checked); index values are
        // set by the caller, who must keep them in range (see `Backend::set_i32`).
        let p = unsafe { ffi::ggml_get_rows(self.ctx.as_ptr(), a.raw(), idx.raw()) };
        self.wrap(p, "get_rows")
    }

    /// Zero padding at the end of each axis.
    pub fn pad<'a>(&mut self, a: Tensor<'_>, p: [i32; 4]) -> Result<Tensor<'a>> {
        if p.iter().any(|&x| x < 0) || a.ty() != ffi::GGML_TYPE_F32 {
            return Err(err("pad", format!("{p:?}")));
        }
        // SAFETY: non-negative padding of an f32 tensor.
        let r = unsafe { ffi::ggml_pad(self.ctx.as_ptr(), a.raw(), p[0], p[1], p[2], p[3]) };
        self.wrap(r, "pad")
    }

    /// Concatenation along `dim`.
    pub fn concat<'a>(&mut self, a: Tensor<'_>, b: Tensor<'_>, dim: usize) -> Result<Tensor<'a>> {
        let (x, y) = (a.ne(), b.ne());
        if dim > 3 || (0..4).any(|i| i != dim && x[i] != y[i]) || a.ty() != b.ty() {
            return Err(err("concat", format!("{x:?} and {y:?} along {dim}")));
        }
        // SAFETY: all other axes agree, same type (checked).
        let p = unsafe { ffi::ggml_concat(self.ctx.as_ptr(), a.raw(), b.raw(), dim as i32) };
        self.wrap(p, "concat")
    }
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
    pub fn name(&self) -> String {
        // SAFETY: a registry device; ggml returns a static string or null.
        text(unsafe { ffi::ggml_backend_dev_name(self.ptr.as_ptr()) })
    }
}

/// The GPUs of ggml's registry, in registry order (the order llama.cpp's
/// `main_gpu` indexes). Empty on CPU-only builds.
pub fn gpu_devices() -> Vec<Device> {
    super::llama::init_backend();
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
    cancel: Arc<AtomicBool>,
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
            cancel,
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

    /// Whether the graph runs on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.gpu.is_some()
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

    /// Allocates the graph's tensors; call before setting inputs.
    pub fn alloc(&mut self, g: &Graph) -> Result<()> {
        // SAFETY: a live scheduler (reset first: it allocates one graph at a
        // time) and a graph whose node and leaf count fit its hash table
        // (SCHED_SIZE > MAX_NODES plus every leaf of a graph); the graph's
        // inputs and outputs are flagged; every weight lives in a buffer one
        // of the scheduler's backends can use (host memory or its GPU).
        if !unsafe {
            ffi::ggml_backend_sched_reset(self.sched.as_ptr());
            ffi::ggml_backend_sched_alloc_graph(self.sched.as_ptr(), g.gf.as_ptr())
        } {
            return Err(Error::Backend(
                "cannot allocate the compute graph (out of memory?)".into(),
            ));
        }
        Ok(())
    }

    /// Copies f32 data into an input of an allocated graph.
    pub fn set_f32(&mut self, g: &Graph, t: Tensor<'_>, data: &[f32]) -> Result<()> {
        if !g.inputs.contains(&t.ptr)
            || t.ty() != ffi::GGML_TYPE_F32
            || data.len() as i64 != t.nelements()
        {
            return Err(Error::Backend(format!(
                "input {}: {} values for {:?}",
                t.name(),
                data.len(),
                t.ne()
            )));
        }
        // SAFETY: an allocated, contiguous f32 input of exactly data.len() elements.
        unsafe { ffi::ggml_backend_tensor_set(t.raw(), data.as_ptr().cast(), 0, t.nbytes()) };
        Ok(())
    }

    /// Copies indices into an i32 input; each must be below `bound` (the row
    /// count of the tensor they index).
    pub fn set_i32(&mut self, g: &Graph, t: Tensor<'_>, data: &[i32], bound: i64) -> Result<()> {
        if !g.inputs.contains(&t.ptr)
            || t.ty() != ffi::GGML_TYPE_I32
            || data.len() as i64 != t.nelements()
            || data.iter().any(|&i| i < 0 || i as i64 >= bound)
        {
            return Err(Error::Backend(format!(
                "index input {} is invalid",
                t.name()
            )));
        }
        // SAFETY: an allocated, contiguous i32 input of exactly data.len() elements.
        unsafe { ffi::ggml_backend_tensor_set(t.raw(), data.as_ptr().cast(), 0, t.nbytes()) };
        Ok(())
    }

    /// Runs the graph. Returns `Cancelled` if the flag was raised.
    pub fn compute(&mut self, g: &Graph) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        // SAFETY: the graph was allocated by `alloc` on this scheduler.
        let st =
            unsafe { ffi::ggml_backend_sched_graph_compute(self.sched.as_ptr(), g.gf.as_ptr()) };
        match st {
            ffi::GGML_STATUS_SUCCESS => Ok(()),
            ffi::GGML_STATUS_ABORTED => Err(Error::Cancelled),
            s => Err(Error::Backend(format!(
                "graph compute failed with status {s}"
            ))),
        }
    }

    /// Reads an output tensor as f32 (must be contiguous f32).
    pub fn get_f32(&self, t: Tensor<'_>) -> Result<Vec<f32>> {
        if t.ty() != ffi::GGML_TYPE_F32 || !t.is_contiguous() {
            return Err(Error::Backend(format!(
                "output {} is not contiguous f32",
                t.name()
            )));
        }
        let mut out = vec![0f32; t.nelements() as usize];
        // SAFETY: an allocated contiguous f32 tensor of nelements values.
        unsafe { ffi::ggml_backend_tensor_get(t.raw(), out.as_mut_ptr().cast(), 0, t.nbytes()) };
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
fn cpu_device() -> Result<NonNull<ffi::ggml_backend_device>> {
    super::llama::init_backend();
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
unsafe fn cpu_proc<F: Copy>(name: &CStr) -> Option<F> {
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

/// A static NUL-terminated string from ggml, or "" for null.
fn text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: ggml returns static NUL-terminated strings.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Every device of ggml's backend registry.
pub fn devices() -> Vec<DeviceInfo> {
    super::llama::init_backend();
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
