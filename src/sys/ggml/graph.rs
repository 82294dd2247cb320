//! The graph builder: every op checks ggml's preconditions, and that its
//! operands belong to this graph, before ggml sees them.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::weights::{MappedWeights, Weight};
use super::{ffi, ggml_ctx, next_id, Tensor};
use crate::error::{Error, Result};
use crate::sys::types::GgmlType;

/// Unary operations the graph uses.
#[derive(Clone, Copy, Debug)]
pub enum Unary {
    /// ggml's GELU (tanh form) from an f16 lookup table: fast, ~1e-3 error.
    GeluTable,
    /// Exact GELU, tanh form (on the CPU dam's vectorised kernel, f32
    /// inputs only; elsewhere ggml's, which computes it in f32 there).
    GeluTanh,
    /// Exact GELU with erf (on the CPU dam's vectorised kernel, within
    /// 1.5e-7 of erf as PyTorch's CPU kernel; elsewhere ggml's).
    GeluErf,
    Relu,
}

fn err(op: &str, msg: String) -> Error {
    Error::Backend(format!("graph {op}: {msg}"))
}

/// Builds one compute graph over the weights `'w`. Each op checks ggml's
/// preconditions and that its operands are tensors of this graph, and names
/// its node `<scope><op>`, so every node carries a debug name. Ops take
/// `&self` and return tensors that borrow the graph; the builder state
/// lives in cells (a graph is used by one thread: it is neither `Send` nor
/// `Sync`).
pub struct Graph<'w> {
    ctx: NonNull<ffi::ggml_context>,
    gf: NonNull<ffi::ggml_cgraph>,
    /// Unique id, carried by this graph's tensors.
    id: u64,
    weights: &'w MappedWeights,
    scope: RefCell<String>,
    inputs: RefCell<Vec<NonNull<ffi::ggml_tensor>>>,
    outputs: RefCell<Vec<NonNull<ffi::ggml_tensor>>>,
    /// For each index input: the fewest rows of a tensor it selects from.
    bounds: RefCell<Vec<(NonNull<ffi::ggml_tensor>, i64)>>,
    /// Tensors created plus weights taken: bounds the context's headers,
    /// the graph's nodes and its leaves (ggml asserts on overflow).
    made: Cell<usize>,
    /// Allocated on a backend: no more nodes.
    sealed: Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

impl Drop for Graph<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`, freed once; the graph lives in the context.
        unsafe { ffi::ggml_free(self.ctx.as_ptr()) };
    }
}

/// Node budget of one graph (the tower has ~40 nodes per layer and branch).
const MAX_NODES: usize = 1 << 16;
/// The scheduler's table size: room for MAX_NODES nodes and their leaves.
pub(super) const SCHED_SIZE: usize = 2 * MAX_NODES;

impl<'w> Graph<'w> {
    /// An empty graph reading `weights`, which it borrows: they outlive it.
    pub fn new(weights: &'w MappedWeights) -> Result<Graph<'w>> {
        let ctx = ggml_ctx(MAX_NODES, MAX_NODES)?;
        // SAFETY: the context was sized for a graph of MAX_NODES nodes.
        let gf = unsafe { ffi::ggml_new_graph_custom(ctx.as_ptr(), MAX_NODES, false) };
        let Some(gf) = NonNull::new(gf) else {
            // SAFETY: created above, freed once.
            unsafe { ffi::ggml_free(ctx.as_ptr()) };
            return Err(Error::Backend("ggml_new_graph failed".into()));
        };
        Ok(Graph {
            ctx,
            gf,
            id: next_id(),
            weights,
            scope: RefCell::default(),
            inputs: RefCell::default(),
            outputs: RefCell::default(),
            bounds: RefCell::default(),
            made: Cell::new(0),
            sealed: Cell::new(false),
            _not_send: PhantomData,
        })
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }
    pub(super) fn weights(&self) -> &'w MappedWeights {
        self.weights
    }
    pub(super) fn raw_graph(&self) -> *mut ffi::ggml_cgraph {
        self.gf.as_ptr()
    }
    pub(super) fn inputs(&self) -> Vec<NonNull<ffi::ggml_tensor>> {
        self.inputs.borrow().clone()
    }
    pub(super) fn outputs(&self) -> Vec<NonNull<ffi::ggml_tensor>> {
        self.outputs.borrow().clone()
    }
    /// Called by the backend that allocates the graph.
    pub(super) fn seal(&self) {
        self.sealed.set(true);
    }
    /// The row count every index in the index input `t` must stay below
    /// (`None`: it selects nothing).
    pub(super) fn index_bound(&self, t: Tensor<'_>) -> Option<i64> {
        self.bounds
            .borrow()
            .iter()
            .filter(|(p, _)| *p == t.ptr)
            .map(|&(_, n)| n)
            .min()
    }

    /// Prefix for the names of the nodes created next.
    pub fn set_scope(&self, scope: impl Into<String>) {
        *self.scope.borrow_mut() = scope.into();
    }

    /// Checks that a new node may be added, with these operands: the graph
    /// is not allocated yet and has room, and every operand is a tensor of
    /// this graph holding data (i32 tensors are only indices, see
    /// `get_rows`). Returns the context to create the node in.
    fn begin(&self, op: &str, operands: &[Tensor<'_>]) -> Result<*mut ffi::ggml_context> {
        if self.sealed.get() {
            return Err(err(op, "the graph is already allocated".into()));
        }
        if self.made.get() >= MAX_NODES {
            return Err(err(op, format!("more than {MAX_NODES} nodes")));
        }
        for t in operands {
            if t.graph != self.id {
                return Err(err(
                    op,
                    format!("{} is a tensor of another graph", t.name()),
                ));
            }
            if t.ty() == ffi::GGML_TYPE_I32 {
                return Err(err(op, format!("{} holds indices", t.name())));
            }
        }
        Ok(self.ctx.as_ptr())
    }

    /// The node ggml just made for `op` (from the context `begin` gave).
    fn wrap<'g>(&'g self, p: *mut ffi::ggml_tensor, op: &str) -> Result<Tensor<'g>> {
        let ptr = NonNull::new(p)
            .ok_or_else(|| err(op, "ggml returned null (out of graph memory?)".into()))?;
        self.made.set(self.made.get() + 1);
        let t = Tensor {
            ptr,
            graph: self.id,
            weight: false,
            _graph: PhantomData,
        };
        let name = format!("{}{op}", self.scope.borrow());
        set_name(t, &name);
        Ok(t)
    }

    /// The weight `w` as a tensor of this graph (`w` must be a handle of
    /// this graph's weights).
    pub fn weight<'g>(&'g self, w: Weight) -> Result<Tensor<'g>> {
        let ptr = self.weights.tensor(w).ok_or_else(|| {
            err(
                "weight",
                format!("not a weight of this graph's model ({})", w.owner()),
            )
        })?;
        if self.made.get() >= MAX_NODES {
            return Err(err("weight", format!("more than {MAX_NODES} nodes")));
        }
        self.made.set(self.made.get() + 1);
        Ok(Tensor {
            ptr,
            graph: self.id,
            weight: true,
            _graph: PhantomData,
        })
    }

    /// A new f32 input tensor (data set on the backend after allocation).
    pub fn input<'g>(&'g self, name: &str, ty: GgmlType, ne: &[i64]) -> Result<Tensor<'g>> {
        if ty != GgmlType::F32 {
            return Err(err("input", "only f32 inputs".into()));
        }
        self.new_input(name, ffi::GGML_TYPE_F32, ne)
    }

    /// A new i32 input tensor of `n` indices (for `get_rows`).
    pub fn input_i32<'g>(&'g self, name: &str, n: i64) -> Result<Tensor<'g>> {
        self.new_input(name, ffi::GGML_TYPE_I32, &[n])
    }

    fn new_input<'g>(&'g self, name: &str, ty: u32, ne: &[i64]) -> Result<Tensor<'g>> {
        if ne.is_empty() || ne.len() > 4 || ne.iter().any(|&d| d <= 0) {
            return Err(err("input", format!("bad shape {ne:?}")));
        }
        let c = self.begin("input", &[])?;
        // SAFETY: valid context with room (checked by `begin`), a plain
        // type and a non-empty shape of 1-4 axes (checked).
        let p = unsafe { ffi::ggml_new_tensor(c, ty, ne.len() as i32, ne.as_ptr()) };
        let t = self.wrap(p, "input")?;
        set_name(t, name);
        // SAFETY: a tensor of this graph's context.
        unsafe { ffi::ggml_set_input(t.raw()) };
        self.inputs.borrow_mut().push(t.ptr);
        Ok(t)
    }

    /// Marks a node that must survive the computation (the backend reads
    /// only outputs) and adds it, with what it depends on, to the graph.
    pub fn output(&self, t: Tensor<'_>, name: &str) -> Result<()> {
        self.begin("output", &[t])?;
        if t.weight {
            return Err(err("output", format!("{} is a weight", t.name())));
        }
        set_name(t, name);
        // SAFETY: a node of this graph's context (checked by `begin`), and
        // the graph has room for it and its parents (`made` < MAX_NODES
        // counts every node and leaf it can reach).
        unsafe {
            ffi::ggml_set_output(t.raw());
            ffi::ggml_build_forward_expand(self.gf.as_ptr(), t.raw());
        }
        self.outputs.borrow_mut().push(t.ptr);
        Ok(())
    }

    // ---- ops -------------------------------------------------------------

    /// `a @ b` in ggml's sense: result [a.ne1, b.ne1, b.ne2, b.ne3].
    pub fn mul_mat<'g>(&'g self, a: Tensor<'_>, b: Tensor<'_>) -> Result<Tensor<'g>> {
        let c = self.begin("mul_mat", &[a, b])?;
        let (x, y) = (a.ne(), b.ne());
        if x[0] != y[0] || y[2] % x[2] != 0 || y[3] % x[3] != 0 {
            return Err(err("mul_mat", format!("{x:?} x {y:?}")));
        }
        // SAFETY: shapes satisfy ggml_can_mul_mat; `a` is never transposed here
        // (weights and permuted-then-cont tensors only).
        let p = unsafe { ffi::ggml_mul_mat(c, a.raw(), b.raw()) };
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
    pub fn add<'g>(&'g self, a: Tensor<'_>, b: Tensor<'_>) -> Result<Tensor<'g>> {
        let c = self.begin("add", &[a, b])?;
        Self::check_repeat("add", a, b)?;
        // SAFETY: b can be repeated to a's shape (checked).
        let p = unsafe { ffi::ggml_add(c, a.raw(), b.raw()) };
        self.wrap(p, "add")
    }

    /// `a * b` elementwise, `b` broadcast over `a`.
    pub fn mul<'g>(&'g self, a: Tensor<'_>, b: Tensor<'_>) -> Result<Tensor<'g>> {
        let c = self.begin("mul", &[a, b])?;
        Self::check_repeat("mul", a, b)?;
        // SAFETY: b can be repeated to a's shape (checked).
        let p = unsafe { ffi::ggml_mul(c, a.raw(), b.raw()) };
        self.wrap(p, "mul")
    }

    /// `a * s + b`.
    pub fn scale_bias<'g>(&'g self, a: Tensor<'_>, s: f32, b: f32) -> Result<Tensor<'g>> {
        let c = self.begin("scale_bias", &[a])?;
        // SAFETY: no shape precondition.
        let p = unsafe { ffi::ggml_scale_bias(c, a.raw(), s, b) };
        self.wrap(p, "scale")
    }

    /// Normalises each row to zero mean, unit variance.
    pub fn norm<'g>(&'g self, a: Tensor<'_>, eps: f32) -> Result<Tensor<'g>> {
        let c = self.begin("norm", &[a])?;
        // SAFETY: no shape precondition.
        let p = unsafe { ffi::ggml_norm(c, a.raw(), eps) };
        self.wrap(p, "norm")
    }

    pub fn unary<'g>(&'g self, a: Tensor<'_>, op: Unary) -> Result<Tensor<'g>> {
        let c = self.begin("unary", &[a])?;
        if !a.is_contiguous() {
            return Err(err("unary", "input is not contiguous".into()));
        }
        let cpu = self.weights.device().is_none();
        let kernel = match op {
            Unary::GeluErf => Some(super::ops::Gelu::Erf),
            Unary::GeluTanh => Some(super::ops::Gelu::Tanh),
            _ => None,
        };
        if let (Some(kernel), true) = (kernel, cpu) {
            if a.ty() != ffi::GGML_TYPE_F32 {
                return Err(err("unary", format!("{op:?} takes f32 input on the CPU")));
            }
            // SAFETY: the input is f32 and contiguous (checked); ggml makes
            // the output in its shape, f32 and contiguous, and calls the
            // callback on the CPU backend (these weights are not on a GPU,
            // so neither is the graph) with both allocated: its contract.
            let p = unsafe {
                ffi::ggml_map_custom1(
                    c,
                    a.raw(),
                    kernel.op(),
                    -1, // GGML_N_TASKS_MAX: every thread of the backend
                    std::ptr::null_mut(),
                )
            };
            return self.wrap(
                p,
                if kernel == super::ops::Gelu::Erf {
                    "gelu_erf"
                } else {
                    "gelu_tanh"
                },
            );
        }
        // SAFETY: unary ops need a contiguous input (checked).
        let (p, name) = unsafe {
            match op {
                Unary::GeluTable => (ffi::ggml_gelu(c, a.raw()), "gelu"),
                Unary::GeluTanh => (ffi::ggml_gelu(c, a.raw()), "gelu_tanh"),
                Unary::GeluErf => (ffi::ggml_gelu_erf(c, a.raw()), "gelu_erf"),
                Unary::Relu => (ffi::ggml_relu(c, a.raw()), "relu"),
            }
        };
        self.wrap(p, name)
    }

    pub fn cont<'g>(&'g self, a: Tensor<'_>) -> Result<Tensor<'g>> {
        let c = self.begin("cont", &[a])?;
        // SAFETY: no precondition.
        let p = unsafe { ffi::ggml_cont(c, a.raw()) };
        self.wrap(p, "cont")
    }

    /// Reshape of a contiguous tensor (same element count).
    pub fn reshape<'g>(&'g self, a: Tensor<'_>, ne: &[i64]) -> Result<Tensor<'g>> {
        let c = self.begin("reshape", &[a])?;
        let n: i64 = ne.iter().product();
        if !a.is_contiguous()
            || n != a.nelements()
            || ne.is_empty()
            || ne.len() > 4
            || ne.iter().any(|&d| d <= 0)
        {
            return Err(err("reshape", format!("{:?} to {ne:?}", a.ne())));
        }
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
    pub fn permute<'g>(&'g self, a: Tensor<'_>, axes: [i32; 4]) -> Result<Tensor<'g>> {
        let c = self.begin("permute", &[a])?;
        let mut seen = [false; 4];
        for &x in &axes {
            if !(0..4).contains(&x) || seen[x as usize] {
                return Err(err("permute", format!("axes {axes:?}")));
            }
            seen[x as usize] = true;
        }
        // SAFETY: axes are a permutation of 0..4 (checked).
        let p = unsafe { ffi::ggml_permute(c, a.raw(), axes[0], axes[1], axes[2], axes[3]) };
        self.wrap(p, "permute")
    }

    /// A view of `ne` elements with strides `nb` (bytes) at `offset` bytes.
    pub fn view<'g>(
        &'g self,
        a: Tensor<'_>,
        ne: [i64; 4],
        nb: [usize; 3],
        offset: usize,
    ) -> Result<Tensor<'g>> {
        let c = self.begin("view", &[a])?;
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
                c,
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
    /// `softmax(scale * scores + rel_h[k_h] + rel_w[k_w])` over the keys of
    /// each row (SAM's decomposed relative positions): `scores` [s*s, n, m]
    /// with keys `k_w + s k_h`, `rel_h` and `rel_w` [s, n, m], all f32 and
    /// contiguous. On the CPU one pass of dam's kernel; elsewhere ggml's
    /// scale, two broadcast adds and softmax.
    pub fn rel_soft_max<'g>(
        &'g self,
        scores: Tensor<'_>,
        rel_h: Tensor<'_>,
        rel_w: Tensor<'_>,
        scale: f32,
    ) -> Result<Tensor<'g>> {
        let c = self.begin("rel_soft_max", &[scores, rel_h, rel_w])?;
        let [k, n, m, one] = scores.ne();
        let s = rel_h.ne()[0];
        let fits = one == 1
            && s * s == k
            && rel_h.ne() == [s, n, m, 1]
            && rel_w.ne() == [s, n, m, 1]
            && [scores, rel_h, rel_w]
                .iter()
                .all(|t| t.ty() == ffi::GGML_TYPE_F32 && t.is_contiguous());
        if !fits {
            return Err(err(
                "rel_soft_max",
                format!(
                    "scores {:?}, rel_h {:?}, rel_w {:?}",
                    scores.ne(),
                    rel_h.ne(),
                    rel_w.ne()
                ),
            ));
        }
        if self.weights.device().is_none() {
            // SAFETY: the shapes and types rel_soft_max_op needs (checked);
            // ggml makes the output in the scores' shape and calls the
            // callback on the CPU backend (these weights are not on a GPU,
            // so neither is the graph) with all four allocated. The userdata
            // is the scale's bits, never dereferenced.
            let p = unsafe {
                ffi::ggml_map_custom3(
                    c,
                    scores.raw(),
                    rel_h.raw(),
                    rel_w.raw(),
                    Some(super::ops::rel_soft_max_op),
                    -1, // GGML_N_TASKS_MAX: every thread of the backend
                    scale.to_bits() as usize as *mut std::os::raw::c_void,
                )
            };
            return self.wrap(p, "rel_soft_max");
        }
        let x = self.scale_bias(scores, scale, 0.0)?;
        let x = self.reshape(x, &[s, s, n, m])?;
        let x = self.add(x, self.reshape(rel_h, &[1, s, n, m])?)?;
        let x = self.add(x, self.reshape(rel_w, &[s, 1, n, m])?)?;
        self.soft_max_ext(self.reshape(x, &[k, n, m])?, None, 1.0)
    }

    pub fn soft_max_ext<'g>(
        &'g self,
        a: Tensor<'_>,
        mask: Option<Tensor<'_>>,
        scale: f32,
    ) -> Result<Tensor<'g>> {
        let c = self.begin("soft_max", &[a])?;
        if let Some(m) = mask {
            self.begin("soft_max", &[m])?;
        }
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
        let p = unsafe { ffi::ggml_soft_max_ext(c, a.raw(), mp, scale, 0.0) };
        self.wrap(p, "soft_max")
    }

    /// Non-overlapping patch embedding: a stride-`P` convolution without
    /// padding (see [`Graph::conv2d`]).
    pub fn patch_embed<'g>(&'g self, kernel: Tensor<'_>, input: Tensor<'_>) -> Result<Tensor<'g>> {
        let p = kernel.ne()[0] as i32;
        self.conv2d(kernel, input, p, 0)
    }

    /// 2-D convolution without bias, square kernel, the same `stride` and
    /// zero `pad` on both axes: kernel [K, K, IC, OC], input [W, H, IC, N]
    /// -> [OC, OW*OH, N], positions row-major. Unlike `ggml_conv_2d`, the
    /// im2col stays f32 (ggml's conv_2d rounds it to f16).
    pub fn conv2d<'g>(
        &'g self,
        kernel: Tensor<'_>,
        input: Tensor<'_>,
        stride: i32,
        pad: i32,
    ) -> Result<Tensor<'g>> {
        let c = self.begin("conv2d", &[kernel, input])?;
        let (k, x) = (kernel.ne(), input.ne());
        if k[2] != x[2]
            || k[0] != k[1]
            || stride < 1
            || pad < 0
            || k[0] > x[0] + 2 * i64::from(pad)
            || k[1] > x[1] + 2 * i64::from(pad)
            || kernel.ty() != ffi::GGML_TYPE_F32
            || !kernel.is_contiguous()
        {
            return Err(err(
                "conv2d",
                format!("kernel {k:?} on {x:?}, stride {stride}, pad {pad}"),
            ));
        }
        // SAFETY: channels agree, stride >= 1 and the padded input holds
        // the kernel, so the output is non-empty (checked).
        let cols = unsafe {
            ffi::ggml_im2col(
                c,
                kernel.raw(),
                input.raw(),
                stride,
                stride,
                pad,
                pad,
                1,
                1,
                true,
                ffi::GGML_TYPE_F32,
            )
        };
        let cols = self.wrap(cols, "im2col")?; // [IC*K*K, OW, OH, N]
        let [kk, ow, oh, n] = cols.ne();
        let cols = self.reshape(cols, &[kk, ow * oh * n])?;
        let w = self.reshape(kernel, &[kk, k[3]])?;
        let y = self.mul_mat(w, cols)?; // [OC, OW*OH*N]
        self.reshape(y, &[k[3], ow * oh, n])
    }

    /// Depthwise 2-D convolution without bias of channel-fastest tokens:
    /// kernel [K, K, 1, C] (PyTorch's [C, 1, K, K]), `x` [C, W, H, N]
    /// contiguous -> [C, OW, OH, N] contiguous; the same `stride` and zero
    /// `pad` on both axes, f32 accumulation.
    pub fn conv2d_dw<'g>(
        &'g self,
        kernel: Tensor<'_>,
        x: Tensor<'_>,
        stride: i32,
        pad: i32,
    ) -> Result<Tensor<'g>> {
        let (k, s) = (kernel.ne(), x.ne());
        if k[0] != k[1]
            || k[2] != 1
            || k[3] != s[0]
            || stride < 1
            || pad < 0
            || k[0] > s[1] + 2 * i64::from(pad)
            || k[1] > s[2] + 2 * i64::from(pad)
            || kernel.ty() != ffi::GGML_TYPE_F32
            || x.ty() != ffi::GGML_TYPE_F32
            || !kernel.is_contiguous()
            || !x.is_contiguous()
        {
            return Err(err(
                "conv2d_dw",
                format!("kernel {k:?} on {s:?}, stride {stride}, pad {pad}"),
            ));
        }
        // ggml's channels-fastest path reads the kernel channels-fastest
        // too: [C, K*K] in memory, viewed as [K, K, 1, C] (the unit axis's
        // stride no larger than the first's, which ggml checks).
        let kc = self.reshape(kernel, &[k[0] * k[1], k[3]])?;
        let kc = self.cont(self.permute(kc, [1, 0, 2, 3])?)?;
        let kc = self.reshape(kc, &[k[3], 1, k[0], k[1]])?;
        let kv = self.permute(kc, [3, 2, 0, 1])?;
        let xv = self.permute(x, [2, 0, 1, 3])?; // [W, H, C, N], C fastest
        let c = self.begin("conv2d_dw", &[kv, xv])?;
        // SAFETY: the kernel is K x K x 1 x C for C channels, stride >= 1
        // and the padded input holds the kernel (checked), so the output
        // is non-empty; both operands are f32 with channels fastest, the
        // layout ggml's CWHN path reads.
        let y = unsafe {
            ffi::ggml_conv_2d_dw_direct(c, kv.raw(), xv.raw(), stride, stride, pad, pad, 1, 1)
        };
        let y = self.wrap(y, "conv2d_dw")?; // [OW, OH, C, N], C fastest
        self.permute(y, [1, 2, 0, 3])
    }

    /// Converts to f16 (for flash attention's K and V).
    pub fn cast_f16<'g>(&'g self, a: Tensor<'_>) -> Result<Tensor<'g>> {
        let c = self.begin("cast_f16", &[a])?;
        if a.ty() != ffi::GGML_TYPE_F32 {
            return Err(err("cast", "only f32 -> f16".into()));
        }
        // SAFETY: f32 -> f16 is a supported conversion; no shape precondition.
        let p = unsafe { ffi::ggml_cast(c, a.raw(), ffi::GGML_TYPE_F16) };
        self.wrap(p, "cast")
    }

    /// Fused attention without a mask: q [D, Nq, H, B] f32, k and v
    /// [D, Nk, H, B] both f16 or (CPU) both f32 -> [D, H, Nq, B] (heads
    /// before tokens). Softmax and accumulation in f32.
    pub fn flash_attn<'g>(
        &'g self,
        q: Tensor<'_>,
        k: Tensor<'_>,
        v: Tensor<'_>,
        scale: f32,
    ) -> Result<Tensor<'g>> {
        let c = self.begin("flash_attn", &[q, k, v])?;
        let (x, y, z) = (q.ne(), k.ne(), v.ne());
        if q.ty() != ffi::GGML_TYPE_F32
            || !(k.ty() == ffi::GGML_TYPE_F16
                || k.ty() == ffi::GGML_TYPE_F32 && self.weights.device().is_none())
            || v.ty() != k.ty()
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
                c,
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
    pub fn get_rows<'g>(&'g self, a: Tensor<'_>, idx: Tensor<'_>) -> Result<Tensor<'g>> {
        let c = self.begin("get_rows", &[a])?;
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
        if idx.graph != self.id {
            return Err(err("get_rows", "indices of another graph".into()));
        }
        // SAFETY: i32 indices over a 2-D source (checked). The indices are an
        // input of this graph (the only i32 tensors ops accept are inputs),
        // and `Backend::set_i32` keeps every value below the row count
        // recorded here, so ggml's bound assert holds at compute.
        let p = unsafe { ffi::ggml_get_rows(c, a.raw(), idx.raw()) };
        self.bounds.borrow_mut().push((idx.ptr, x[1]));
        self.wrap(p, "get_rows")
    }

    /// Zero padding at the end of each axis.
    pub fn pad<'g>(&'g self, a: Tensor<'_>, p: [i32; 4]) -> Result<Tensor<'g>> {
        let c = self.begin("pad", &[a])?;
        if p.iter().any(|&x| x < 0) || a.ty() != ffi::GGML_TYPE_F32 {
            return Err(err("pad", format!("{p:?}")));
        }
        // SAFETY: non-negative padding of an f32 tensor.
        let r = unsafe { ffi::ggml_pad(c, a.raw(), p[0], p[1], p[2], p[3]) };
        self.wrap(r, "pad")
    }

    /// Concatenation along `dim`.
    pub fn concat<'g>(&'g self, a: Tensor<'_>, b: Tensor<'_>, dim: usize) -> Result<Tensor<'g>> {
        let c = self.begin("concat", &[a, b])?;
        let (x, y) = (a.ne(), b.ne());
        if dim > 3 || (0..4).any(|i| i != dim && x[i] != y[i]) || a.ty() != b.ty() {
            return Err(err("concat", format!("{x:?} and {y:?} along {dim}")));
        }
        // SAFETY: all other axes agree, same type (checked).
        let p = unsafe { ffi::ggml_concat(c, a.raw(), b.raw(), dim as i32) };
        self.wrap(p, "concat")
    }
}

/// Names a node (truncated to ggml's 63 bytes); never a weight (shared).
fn set_name(t: Tensor<'_>, name: &str) {
    debug_assert!(!t.weight);
    let mut n: Vec<u8> = name.bytes().filter(|&b| b != 0).take(63).collect();
    n.push(0);
    // SAFETY: a node header of a live graph, written by that graph's one
    // thread; the name is NUL-terminated, at most 64 bytes; ggml copies it.
    unsafe { ffi::ggml_set_name(t.raw(), n.as_ptr().cast()) };
}
