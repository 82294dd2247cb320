//! A safe layer over the parts of ggml that the vision graph uses: weights
//! pointing into a memory mapping, a graph builder whose ops check ggml's
//! shape preconditions first (a failed ggml assert aborts the host process),
//! and a backend that allocates, computes and can be cancelled.
//!
//! Soundness rests on three rules, each enforced here rather than by callers:
//! - a [`Tensor`] borrows the [`Graph`] it belongs to, so it cannot outlive it;
//! - a graph borrows the [`MappedWeights`] it reads, so the weights outlive it;
//! - every graph has a unique id that its tensors carry: an op, and the
//!   [`Backend`], refuse a tensor of another graph (an error, not a dangling
//!   pointer), and the backend only touches the graph it allocated last.
//!
//! The two snippets below fail with the codes given when `sys` is made
//! public (checked by hand: stable rustdoc ignores the codes, and with `sys`
//! crate-private the path alone fails; re-check them after edits here).
//!
//! ```compile_fail,E0597
//! # use dam::sys::ggml::{Graph, MappedWeights};
//! # fn f(w: &MappedWeights) -> dam::Result<()> {
//! let t;
//! {
//!     let g = Graph::new(w)?;
//!     t = g.input("x", dam::sys::GgmlType::F32, &[4])?;
//! } // the graph (and its ggml context) is freed here
//! let _ = t.ne(); // error[E0597]: `g` does not live long enough
//! # Ok(()) }
//! ```
//!
//! ```compile_fail,E0505
//! # use dam::sys::ggml::{Graph, MappedWeights};
//! # fn f(w: MappedWeights) -> dam::Result<()> {
//! let g = Graph::new(&w)?;
//! drop(w); // error[E0505]: cannot move out of `w` because it is borrowed
//! let _ = g.input("x", dam::sys::GgmlType::F32, &[4])?;
//! # Ok(()) }
//! ```

use std::ffi::CStr;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ffi;
use crate::error::{Error, Result};

mod backend;
mod graph;
mod ops;
mod weights;

pub use backend::{cpu_features, devices, gpu_devices, Backend, Device, DeviceInfo};
pub use graph::{Graph, Unary};
pub use weights::{cpu_repacks_any, MappedWeights, Weight};

/// A fresh id for a graph or a set of weights (never reused in a process).
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A tensor of one graph: a node, an input, or a weight the graph reads.
/// Copyable handle; the lifetime borrows the [`Graph`], and `graph` names
/// it, so ops and the backend can refuse a tensor of another graph.
#[derive(Clone, Copy)]
pub struct Tensor<'g> {
    ptr: NonNull<ffi::ggml_tensor>,
    graph: u64,
    /// A weight: shared by every graph (and thread) using the weights, so
    /// it is never renamed or flagged.
    weight: bool,
    _graph: PhantomData<&'g ()>,
}

impl Tensor<'_> {
    fn raw(&self) -> *mut ffi::ggml_tensor {
        self.ptr.as_ptr()
    }
    fn header(&self) -> &ffi::ggml_tensor {
        // SAFETY: the pointer comes from the graph's context or its weights,
        // both alive for the lifetime of this handle (it borrows the graph,
        // which borrows the weights); headers are only written by the
        // single-threaded graph (names, flags of its own nodes) and the
        // backend's allocation, never while this reference lives.
        unsafe { self.ptr.as_ref() }
    }
    /// Whether both handles are the same node.
    pub fn is(&self, other: &Tensor<'_>) -> bool {
        self.ptr == other.ptr
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
        // SAFETY: a valid tensor header (see `header`).
        unsafe { ffi::ggml_nbytes(self.raw()) }
    }
    pub fn is_contiguous(&self) -> bool {
        // SAFETY: a valid tensor header (see `header`).
        unsafe { ffi::ggml_is_contiguous(self.raw()) }
    }
    /// Whether the backend has given the tensor memory.
    fn is_allocated(&self) -> bool {
        let h = self.header();
        !h.buffer.is_null() && !h.data.is_null()
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

/// A metadata-only ggml context with room for `n_tensors` headers and a
/// graph of `graph_nodes` nodes (none for 0).
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

/// A static NUL-terminated string from ggml, or "" for null.
fn text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: ggml returns static NUL-terminated strings.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::sys::{GgmlType, MappedFile};

    /// Weights without tensors over a scratch file (graphs of inputs only).
    fn no_weights() -> MappedWeights {
        let path = std::env::temp_dir().join(format!("dam-ggml-test-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let map = Arc::new(MappedFile::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        MappedWeights::new(map, &[], None, false).unwrap()
    }

    #[test]
    fn misuse_is_an_error_not_an_abort() {
        let w = no_weights();
        let mut be = Backend::new(1, Arc::new(AtomicBool::new(false)), None).unwrap();
        let (g, h) = (Graph::new(&w).unwrap(), Graph::new(&w).unwrap());
        let x = g.input("x", GgmlType::F32, &[4]).unwrap();
        let unused = g.input("unused", GgmlType::F32, &[4]).unwrap();
        let y = h.input("y", GgmlType::F32, &[4]).unwrap();
        // Operands of another graph.
        assert!(g.add(x, y).is_err());
        assert!(g.output(y, "y").is_err());
        let sum = g.add(x, x).unwrap();
        let idx = g.input_i32("idx", 2).unwrap();
        assert!(g.add(sum, idx).is_err(), "indices are not data");
        let rows = g.reshape(sum, &[2, 2]).unwrap();
        let picked = g.get_rows(rows, idx).unwrap();
        g.output(sum, "sum").unwrap();
        g.output(picked, "picked").unwrap();
        // Nothing allocated yet.
        assert!(be.set_f32(&g, x, &[1.0; 4]).is_err());
        assert!(be.compute(&g).is_err());
        be.alloc(&g).unwrap();
        assert!(g.add(x, x).is_err(), "the graph is sealed once allocated");
        assert!(
            be.set_f32(&h, y, &[1.0; 4]).is_err(),
            "not the allocated graph"
        );
        assert!(be.set_f32(&g, x, &[1.0; 3]).is_err(), "wrong size");
        assert!(
            be.set_f32(&g, unused, &[1.0; 4]).is_err(),
            "not in the graph"
        );
        assert!(be.set_f32(&g, sum, &[1.0; 4]).is_err(), "not an input");
        assert!(be.set_i32(&g, idx, &[0, 2]).is_err(), "row 2 of 2");
        be.set_f32(&g, x, &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(be.compute(&g).is_err(), "indices not set");
        be.set_i32(&g, idx, &[1, 0]).unwrap();
        assert!(be.get_f32(&g, sum).is_err(), "not computed");
        be.compute(&g).unwrap();
        assert_eq!(be.get_f32(&g, sum).unwrap(), [2.0, 4.0, 6.0, 8.0]);
        assert_eq!(be.get_f32(&g, picked).unwrap(), [6.0, 8.0, 2.0, 4.0]);
        assert!(be.get_f32(&g, x).is_err(), "not an output");
        // Another graph allocated: g's tensors lose their memory.
        h.output(h.scale_bias(y, 2.0, 0.0).unwrap(), "out").unwrap();
        be.alloc(&h).unwrap();
        assert!(be.get_f32(&g, sum).is_err());
    }
}
