//! Loading the vision file and running the vision stage as one ggml graph.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::context::{key_mask_bias, CrossAttnBlock};
use super::projector::{merge_2x2, merge_indices, Projector};
use super::siglip::{Act, VisionTower};
use crate::error::{Error, Result};
use crate::gguf_file::{GgufHeader, TensorInfo};
use crate::preprocess::Views;
use crate::sys::ggml::{Backend, Device, Graph, MappedWeights, Tensor};
use crate::sys::llama::FlashAttn;
use crate::sys::{GgmlType, MappedFile};
use crate::weights::VisionHparams;

/// The vision half of a DAM model, memory-mapped; immutable and shareable.
pub struct VisionModel {
    pub hp: VisionHparams,
    weights: MappedWeights,
    act: Act,
    /// Fused flash attention (f16 K/V) for reduced-precision weights; f32
    /// weights keep the exact attention.
    flash: bool,
    /// The weight type of the matrices (the most common one), for reports.
    pub weight_type: GgmlType,
    /// The GPU holding the weights and running the graph (`None`: the CPU).
    pub device: Option<Device>,
    pub file_size: u64,
}

/// Where and how the vision stage runs.
#[derive(Clone, Copy, Debug)]
pub struct VisionOptions {
    /// The GPU holding the weights and running the graph (`None`: the CPU).
    pub device: Option<Device>,
    /// Fused attention always (`On`), never (`Off`, the exact path), or for
    /// reduced-precision weights only (`Auto`).
    pub flash_attn: FlashAttn,
    /// On the CPU, copy the matrices that ggml multiplies faster in another
    /// layout (AMX tiles, repacked GEMM blocks) into that layout at load,
    /// as llama.cpp does (more memory and load time, faster compute).
    pub repack: bool,
}

impl Default for VisionOptions {
    fn default() -> Self {
        VisionOptions {
            device: None,
            flash_attn: FlashAttn::Auto,
            repack: true,
        }
    }
}

/// How much of the vision stage to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Only the LLM embeddings.
    Embeddings,
    /// Also Z and F.
    Features,
    /// Also every layer's output (keeps all of them in memory).
    Debug,
}

/// Per-image results of the vision stage, in input order.
#[derive(Clone, Debug, Default)]
pub struct VisionOutput {
    /// Z, [N x C] row-major per image (only when requested).
    pub full_features: Vec<Vec<f32>>,
    /// F, [N x C] per image (equals Z where the context provider was skipped).
    pub crop_features: Vec<Vec<f32>>,
    /// The LLM embeddings, [T x H] per image.
    pub embeddings: Vec<Vec<f32>>,
    /// With `Detail::Debug`: per-layer states named as the fixtures'
    /// `debug.*` tensors, each [B x N x C] in batch order (see `batch_order`).
    pub debug: Vec<(String, Vec<f32>)>,
    /// The batch order used inside the graph (context-provider images first).
    pub batch_order: Vec<usize>,
    /// Whether the context provider ran for each image.
    pub context_applied: Vec<bool>,
}

impl VisionModel {
    /// Maps and validates a `dam-vision` GGUF file on the CPU, with the
    /// default options.
    pub fn load(path: &Path) -> Result<VisionModel> {
        Self::load_with(path, &VisionOptions::default())
    }

    /// Maps and validates a `dam-vision` GGUF file. Every key, shape and type
    /// is checked before ggml sees any tensor. With a device the weights are
    /// uploaded to it once, here.
    pub fn load_with(path: &Path, opts: &VisionOptions) -> Result<VisionModel> {
        let (device, flash) = (opts.device, opts.flash_attn);
        let map = Arc::new(MappedFile::open(path)?);
        let h = GgufHeader::parse(map.bytes(), &path.display().to_string())?;
        // Name the file in errors about its contents.
        let named = |e: Error| match e {
            Error::InvalidModel(m) => Error::InvalidModel(format!("{}: {m}", path.display())),
            e => e,
        };
        let hp = VisionHparams::from_gguf(&h).map_err(named)?;
        hp.check_tensors(&h).map_err(named)?;
        // ggml's CPU kernels read the weights in place from the mapping.
        if let Some(t) = h.tensors.iter().find(|t| t.offset % 32 != 0) {
            return Err(Error::InvalidModel(format!(
                "{}: tensor {} starts at byte {}, which is not 32-byte aligned (general.alignment {} is too small)",
                path.display(),
                t.name,
                t.offset,
                h.alignment
            )));
        }
        let infos: Vec<&TensorInfo> = h.tensors.iter().collect();
        let weights = MappedWeights::new(map.clone(), &infos, device, opts.repack)?;
        let matrices: Vec<GgmlType> = h
            .tensors
            .iter()
            .filter(|t| t.name.ends_with("attn_q.weight"))
            .map(|t| t.ty)
            .collect();
        let weight_type = matrices.first().copied().unwrap_or(GgmlType::F32);
        if hp.padded_for(weight_type) != hp {
            // Written before quantized files padded their MLPs: it works,
            // but its ffn_down is stored in a fallback type.
            crate::sys::llama::log(
                crate::sys::llama::LogLevel::Info,
                &format!(
                    "dam: {}: MLP width {} is not padded for {} (older file); `dam quantize` it again for faster vision\n",
                    path.display(),
                    hp.ff,
                    weight_type.name()
                ),
            );
        }
        // At f32 the exact GELU keeps every stage reference-exact; with
        // reduced-precision weights ggml's table GELU is well inside the error.
        let tanh_act = if weight_type == GgmlType::F32 {
            Act::GeluTanhExact
        } else {
            Act::GeluTanhFast
        };
        let act = if hp.act == "gelu" {
            Act::GeluErf
        } else {
            tanh_act
        };
        let model = VisionModel {
            hp,
            weights,
            act,
            flash: match flash {
                FlashAttn::On => true,
                FlashAttn::Off => false,
                FlashAttn::Auto => weight_type != GgmlType::F32,
            },
            weight_type,
            device,
            file_size: map.bytes().len() as u64,
        };
        // Resolve every module once so a bad gate or missing tensor fails now.
        model.modules().map_err(named)?;
        Ok(model)
    }

    /// How many weight matrices were copied into a CPU repacking layout.
    pub fn n_repacked(&self) -> usize {
        self.weights.n_repacked()
    }

    /// A backend for [`VisionModel::encode`] on this model's device.
    pub fn backend(&self, threads: usize, cancel: Arc<AtomicBool>) -> Result<Backend> {
        Backend::new(threads, cancel, self.device)
    }

    fn modules(&self) -> Result<(VisionTower<'_>, Vec<CrossAttnBlock<'_>>, Projector<'_>)> {
        let hp = &self.hp;
        let ctx_act = if hp.ctx_act == "gelu" {
            Act::GeluErf
        } else {
            self.act
        };
        let tower = VisionTower::load(&self.weights, hp, self.act, self.flash)?;
        let blocks = (0..hp.used_layers() as usize)
            .map(|i| CrossAttnBlock::load(&self.weights, hp, i, ctx_act, self.flash))
            .collect::<Result<_>>()?;
        Ok((tower, blocks, Projector::load(&self.weights, hp)?))
    }

    /// Runs both views of every image through one graph. `Detail::Features`
    /// also returns Z and F (for `dam dump` and parity tests), `Detail::Debug`
    /// every layer's output too.
    pub fn encode(
        &self,
        backend: &mut Backend,
        views: &[&Views],
        detail: Detail,
    ) -> Result<VisionOutput> {
        if backend.on_gpu() != self.device.is_some() {
            return Err(Error::InvalidArgument(
                "the backend runs on another device than the vision weights".into(),
            ));
        }
        let want_features = detail != Detail::Embeddings;
        let debug = detail == Detail::Debug;
        let mut keep: Vec<(String, Tensor)> = Vec::new();
        let hp = &self.hp;
        let s = hp.image_size as usize;
        let plane = s * s;
        if views.is_empty() {
            return Err(Error::InvalidArgument("no image to encode".into()));
        }
        for v in views {
            if v.full.len() != 4 * plane || v.focal.len() != 4 * plane {
                return Err(Error::InvalidArgument(format!(
                    "views are not 4 x {s} x {s} (made for another model size?)"
                )));
            }
        }
        // Images whose focal view differs run the context provider; they go
        // first in the batch so their Z is a prefix of the full-view batch.
        let mut order: Vec<usize> = (0..views.len())
            .filter(|&i| !views[i].focal_is_full)
            .collect();
        let n_applied = order.len();
        order.extend((0..views.len()).filter(|&i| views[i].focal_is_full));
        let (b, a) = (views.len() as i64, n_applied as i64);
        let (c, n, grid) = (hp.hidden as i64, hp.positions() as i64, hp.grid() as i64);
        let t = hp.tokens_per_image() as i64;

        let (tower, blocks, projector) = self.modules()?;
        let mut g = Graph::new()?;
        let si = s as i64;

        // Full view -> Z.
        g.set_scope("full.");
        let rgb = g.input("full.rgb", GgmlType::F32, &[si, si, 3, b])?;
        let msk = g.input("full.mask", GgmlType::F32, &[si, si, 1, b])?;
        let mut x = tower.embeddings.forward(&mut g, rgb, msk)?;
        if debug {
            keep.push(("debug.full.embeddings".into(), x));
        }
        for (i, layer) in tower.layers.iter().enumerate() {
            g.set_scope(format!("full.blk{i}."));
            x = layer.forward(&mut g, x)?;
            if debug {
                keep.push((format!("debug.full.layer_{i}"), x));
            }
        }
        let z = x;
        g.output(z, "full_features");

        // Focal view with cross-attention to Z -> F.
        let mut focal_inputs: Option<(Tensor, Tensor, Option<Tensor>)> = None;
        let mut crop = None;
        if a > 0 {
            g.set_scope("focal.");
            let frgb = g.input("focal.rgb", GgmlType::F32, &[si, si, 3, a])?;
            let fmsk = g.input("focal.mask", GgmlType::F32, &[si, si, 1, a])?;
            let z_a = if a == b {
                z
            } else {
                g.view(
                    z,
                    [c, n, a, 1],
                    [
                        4 * c as usize,
                        (4 * c * n) as usize,
                        (4 * c * n * a) as usize,
                    ],
                    0,
                )?
            };
            let kmask = if hp.ctx_masked {
                Some(g.input("focal.key_mask", GgmlType::F32, &[n, n, 1, a])?)
            } else {
                None
            };
            let mut y = tower.embeddings.forward(&mut g, frgb, fmsk)?;
            if debug {
                keep.push(("debug.crop.embeddings".into(), y));
            }
            for (i, (layer, block)) in tower.layers.iter().zip(&blocks).enumerate() {
                g.set_scope(format!("focal.blk{i}."));
                y = layer.forward(&mut g, y)?;
                if debug {
                    keep.push((format!("debug.crop.layer_{i}"), y));
                }
                g.set_scope(format!("focal.ctx{i}."));
                y = block.forward(&mut g, y, z_a, kmask)?;
                if debug {
                    keep.push((format!("debug.crop.xattn_{i}"), y));
                }
            }
            g.output(y, "crop_features");
            crop = Some(y);
            focal_inputs = Some((frgb, fmsk, kmask));
        }

        // Projector over [F of applied images, Z of the others].
        g.set_scope("mm.");
        let feats = match crop {
            Some(f) if a == b => f,
            Some(f) => {
                let rest = g.view(
                    z,
                    [c, n, b - a, 1],
                    [
                        4 * c as usize,
                        (4 * c * n) as usize,
                        (4 * c * n * (b - a)) as usize,
                    ],
                    (4 * c * n * a) as usize,
                )?;
                g.concat(f, rest, 2)?
            }
            None => z,
        };
        let gp = (grid + 1) / 2;
        let idx = g.input_i32("mm.merge_idx", 2 * gp * gp * b)?;
        let merged = merge_2x2(&mut g, feats, grid, idx)?;
        let emb = projector.forward(&mut g, merged)?;
        g.output(emb, "projector_output");
        for (name, t) in &keep {
            g.output(*t, name);
        }

        backend.alloc(&g)?;
        let gather = |focal: bool, lo: usize, hi: usize, ids: &[usize]| -> Vec<f32> {
            ids.iter()
                .flat_map(|&i| {
                    let v = if focal {
                        &views[i].focal
                    } else {
                        &views[i].full
                    };
                    v[lo..hi].iter().copied()
                })
                .collect()
        };
        backend.set_f32(&g, rgb, &gather(false, 0, 3 * plane, &order))?;
        backend.set_f32(&g, msk, &gather(false, 3 * plane, 4 * plane, &order))?;
        if let Some((frgb, fmsk, kmask)) = focal_inputs {
            let ids = &order[..n_applied];
            backend.set_f32(&g, frgb, &gather(true, 0, 3 * plane, ids))?;
            backend.set_f32(&g, fmsk, &gather(true, 3 * plane, 4 * plane, ids))?;
            if let Some(km) = kmask {
                let mut bias = Vec::with_capacity((n * n * a) as usize);
                for &i in ids {
                    let m01: Vec<f32> = views[i].full[3 * plane..]
                        .iter()
                        .map(|&v| v * hp.image_std[0] + hp.image_mean[0])
                        .collect();
                    bias.extend(key_mask_bias(&m01, s, hp.patch_size as usize, n as usize));
                }
                backend.set_f32(&g, km, &bias)?;
            }
        }
        let merge = merge_indices(gp as usize, b as usize);
        backend.set_i32(&g, idx, &merge, gp * 2 * gp * b)?;
        backend.compute(&g)?;

        let per = |data: Vec<f32>, rows: usize| -> Vec<Vec<f32>> {
            data.chunks(rows).map(|r| r.to_vec()).collect()
        };
        let emb_all = per(backend.get_f32(emb)?, (t * hp.llm_hidden as i64) as usize);
        let mut out = VisionOutput {
            batch_order: order.clone(),
            debug: keep
                .iter()
                .map(|(n, t)| Ok((n.clone(), backend.get_f32(*t)?)))
                .collect::<Result<_>>()?,
            embeddings: vec![Vec::new(); views.len()],
            context_applied: vec![false; views.len()],
            ..Default::default()
        };
        for (slot, &i) in order.iter().enumerate() {
            out.embeddings[i] = emb_all[slot].clone();
            out.context_applied[i] = slot < n_applied;
        }
        if want_features {
            let nc = (n * c) as usize;
            let z_all = per(backend.get_f32(z)?, nc);
            let f_all = match crop {
                Some(f) => per(backend.get_f32(f)?, nc),
                None => Vec::new(),
            };
            out.full_features = vec![Vec::new(); views.len()];
            out.crop_features = vec![Vec::new(); views.len()];
            for (slot, &i) in order.iter().enumerate() {
                out.full_features[i] = z_all[slot].clone();
                out.crop_features[i] = if slot < n_applied {
                    f_all[slot].clone()
                } else {
                    z_all[slot].clone()
                };
            }
        }
        Ok(out)
    }
}
