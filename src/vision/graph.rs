//! Loading the vision file and running the vision stage as one ggml graph.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::context::{key_mask_bias, CrossAttnBlock};
use super::projector::{merge_2x2, merge_indices, Projector};
use super::siglip::{Act, AttnKernel, VisionTower};
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
    /// The modules over `weights`, resolved and checked once at load.
    modules: Modules,
    /// The weight type of the matrices (the most common one), for reports.
    pub weight_type: GgmlType,
    /// The GPU holding the weights and running the graph (`None`: the CPU).
    pub device: Option<Device>,
    pub file_size: u64,
}

/// The tower, the context provider's blocks and the projector: weight
/// handles and settings, built once per model (graphs only read them).
struct Modules {
    tower: VisionTower,
    blocks: Vec<CrossAttnBlock>,
    projector: Projector,
}

impl Modules {
    fn load(
        w: &MappedWeights,
        hp: &VisionHparams,
        act: Act,
        kernel: AttnKernel,
    ) -> Result<Modules> {
        let ctx_act = if hp.ctx_act == "gelu" {
            Act::GeluErf
        } else {
            act
        };
        Ok(Modules {
            tower: VisionTower::load(w, hp, act, kernel)?,
            blocks: (0..hp.used_layers() as usize)
                .map(|i| CrossAttnBlock::load(w, hp, i, ctx_act, kernel))
                .collect::<Result<_>>()?,
            projector: Projector::load(w, hp)?,
        })
    }
}

/// Where and how the vision stage runs.
#[derive(Clone, Copy, Debug)]
pub struct VisionOptions {
    /// The GPU holding the weights and running the graph (`None`: the CPU).
    pub device: Option<Device>,
    /// Fused attention always (`On`), never (`Off`, the exact path), or
    /// `Auto`: on the CPU always (with f32 K/V, as exact as the separate
    /// ops), on a GPU (f16 K/V) for reduced-precision weights only.
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
        // The type the file was made for (its matrices may hold fallbacks).
        let requested = h
            .get(crate::convert::WEIGHT_TYPE_KEY)
            .and_then(|v| v.as_str())
            .and_then(|s| GgmlType::parse(s).ok())
            .unwrap_or(weight_type);
        if hp.padded_for(requested) != hp {
            // Written before quantized files padded their matrices: it
            // works, but some matrices are stored in a fallback type.
            crate::sys::llama::log(
                crate::sys::llama::LogLevel::Info,
                &format!(
                    "dam: {}: matrix widths (input {}, MLP {}) are not padded for {} (older file); `dam quantize` it again for faster vision\n",
                    path.display(),
                    hp.hidden_in,
                    hp.ff,
                    requested.name()
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
        let kernel = match (flash, device) {
            (FlashAttn::Off, _) => AttnKernel::Exact,
            // On the CPU the fused kernel takes f32 K/V: exact, and faster.
            (_, None) => AttnKernel::FlashF32,
            // GPU kernels take f16 K/V: kept off f32 weights by `Auto`,
            // where the exact path keeps reference parity.
            (FlashAttn::Auto, Some(_)) if weight_type == GgmlType::F32 => AttnKernel::Exact,
            (_, Some(_)) => AttnKernel::FlashF16,
        };
        // Resolve every module once, so a bad gate or missing tensor fails now.
        let modules = Modules::load(&weights, &hp, act, kernel).map_err(named)?;
        Ok(VisionModel {
            hp,
            weights,
            modules,
            weight_type,
            device,
            file_size: map.bytes().len() as u64,
        })
    }

    /// How many weight matrices were copied into a CPU repacking layout.
    pub fn n_repacked(&self) -> usize {
        self.weights.n_repacked()
    }

    /// A backend for [`VisionModel::encode`] on this model's device.
    pub fn backend(&self, threads: usize, cancel: Arc<AtomicBool>) -> Result<Backend> {
        Backend::new(threads, cancel, self.device)
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
        let batch = self.batch(views)?;
        let g = Graph::new(&self.weights)?;
        let nodes = self.build(&g, &batch, detail)?;
        backend.alloc(&g)?;
        self.upload(backend, &g, &nodes, views, &batch)?;
        backend.compute(&g)?;
        self.read(backend, &g, &nodes, &batch, detail)
    }

    /// Checks the views and orders them: images whose focal view differs
    /// run the context provider; they go first in the batch so their Z is a
    /// prefix of the full-view batch.
    fn batch(&self, views: &[&Views]) -> Result<Batch> {
        let s = self.hp.image_size as usize;
        if views.is_empty() {
            return Err(Error::InvalidArgument("no image to encode".into()));
        }
        for v in views {
            let mask_ok = !self.hp.ctx_masked || v.full_mask.len() == s * s;
            if v.full.len() != 4 * s * s || v.focal.len() != 4 * s * s || !mask_ok {
                return Err(Error::InvalidArgument(format!(
                    "views are not 4 x {s} x {s} (made for another model size?)"
                )));
            }
        }
        let mut order: Vec<usize> = (0..views.len())
            .filter(|&i| !views[i].focal_is_full)
            .collect();
        let applied = order.len();
        order.extend((0..views.len()).filter(|&i| views[i].focal_is_full));
        Ok(Batch { order, applied })
    }

    /// The graph of one batch: full view -> Z, focal view with
    /// cross-attention to Z -> F, projector over [F of the applied images,
    /// Z of the others].
    fn build<'g>(&self, g: &'g Graph<'_>, batch: &Batch, detail: Detail) -> Result<Nodes<'g>> {
        let hp = &self.hp;
        let (b, a) = (batch.order.len() as i64, batch.applied as i64);
        let (n, grid) = (hp.positions() as i64, hp.grid() as i64);
        let s = hp.image_size as i64;
        let mut keep = (detail == Detail::Debug).then(Vec::new);

        let rgb = g.input("full.rgb", GgmlType::F32, &[s, s, 3, b])?;
        let msk = g.input("full.mask", GgmlType::F32, &[s, s, 1, b])?;
        let z = self.branch(g, "full", rgb, msk, None, &mut keep)?;
        g.output(z, "full_features")?;

        let mut focal = None;
        if a > 0 {
            let frgb = g.input("focal.rgb", GgmlType::F32, &[s, s, 3, a])?;
            let fmsk = g.input("focal.mask", GgmlType::F32, &[s, s, 1, a])?;
            let key_mask = if hp.ctx_masked {
                Some(g.input("focal.key_mask", GgmlType::F32, &[n, n, 1, a])?)
            } else {
                None
            };
            g.set_scope("focal.");
            let z_a = if a == b { z } else { self.images(g, z, 0, a)? };
            // Every block's k and v read Z: padded once to their input
            // width (`Linear::pad_input`), not once per block.
            let z_a = match self.modules.blocks.first() {
                Some(b) => b.cross_attn.k.pad_input(g, z_a)?,
                None => z_a,
            };
            let f = self.branch(g, "focal", frgb, fmsk, Some((z_a, key_mask)), &mut keep)?;
            g.output(f, "crop_features")?;
            focal = Some(FocalNodes {
                rgb: frgb,
                mask: fmsk,
                key_mask,
                crop: f,
            });
        }

        g.set_scope("mm.");
        let feats = match &focal {
            Some(f) if a == b => f.crop,
            Some(f) => g.concat(f.crop, self.images(g, z, a, b)?, 2)?,
            None => z,
        };
        let gp = (grid + 1) / 2;
        let merge_idx = g.input_i32("mm.merge_idx", 2 * gp * gp * b)?;
        let merged = merge_2x2(g, feats, grid, merge_idx)?;
        let emb = self.modules.projector.forward(g, merged)?;
        g.output(emb, "projector_output")?;
        let keep = keep.unwrap_or_default();
        for (name, t) in &keep {
            g.output(*t, name)?;
        }
        Ok(Nodes {
            rgb,
            mask: msk,
            focal,
            merge_idx,
            z,
            emb,
            keep,
        })
    }

    /// One branch of the tower: embeddings, then every used layer, each
    /// followed on the focal branch (`ctx`: Z of the same images and the key
    /// mask) by its cross-attention block. With `keep`, collects each
    /// stage's state under the fixtures' `debug.*` names.
    fn branch<'g>(
        &self,
        g: &'g Graph<'_>,
        name: &str,
        rgb: Tensor<'g>,
        mask: Tensor<'g>,
        ctx: Option<(Tensor<'g>, Option<Tensor<'g>>)>,
        keep: &mut Option<Vec<(String, Tensor<'g>)>>,
    ) -> Result<Tensor<'g>> {
        let tower = &self.modules.tower;
        // The fixtures call the focal branch's states `crop`.
        let dbg = if ctx.is_some() { "crop" } else { name };
        let mut push = |what: String, t: Tensor<'g>| {
            if let Some(k) = keep.as_mut() {
                k.push((format!("debug.{dbg}.{what}"), t));
            }
        };
        g.set_scope(format!("{name}."));
        let mut x = tower.embeddings.forward(g, rgb, mask)?;
        push("embeddings".into(), x);
        for (i, layer) in tower.layers.iter().enumerate() {
            g.set_scope(format!("{name}.blk{i}."));
            x = layer.forward(g, x)?;
            push(format!("layer_{i}"), x);
            if let (Some((z, key_mask)), Some(block)) = (ctx, self.modules.blocks.get(i)) {
                g.set_scope(format!("{name}.ctx{i}."));
                x = block.forward(g, x, z, key_mask)?;
                push(format!("xattn_{i}"), x);
            }
        }
        Ok(x)
    }

    /// Sets every input of the allocated graph: both views' pixels in batch
    /// order, the key mask from each applied image's region, the merge rows.
    fn upload(
        &self,
        backend: &mut Backend,
        g: &Graph<'_>,
        nodes: &Nodes<'_>,
        views: &[&Views],
        batch: &Batch,
    ) -> Result<()> {
        let hp = &self.hp;
        let s = hp.image_size as usize;
        let plane = s * s;
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
        let all = &batch.order;
        backend.set_f32(g, nodes.rgb, &gather(false, 0, 3 * plane, all))?;
        backend.set_f32(g, nodes.mask, &gather(false, 3 * plane, 4 * plane, all))?;
        if let Some(f) = &nodes.focal {
            let ids = &all[..batch.applied];
            backend.set_f32(g, f.rgb, &gather(true, 0, 3 * plane, ids))?;
            backend.set_f32(g, f.mask, &gather(true, 3 * plane, 4 * plane, ids))?;
            if let Some(km) = f.key_mask {
                let (p, n) = (hp.patch_size as usize, hp.positions() as usize);
                let bias: Vec<f32> = ids
                    .iter()
                    .flat_map(|&i| key_mask_bias(&views[i].full_mask, s, p, n))
                    .collect();
                backend.set_f32(g, km, &bias)?;
            }
        }
        let gp = (hp.grid() as usize).div_ceil(2);
        backend.set_i32(g, nodes.merge_idx, &merge_indices(gp, all.len()))
    }

    /// The computed outputs, per image in input order.
    fn read(
        &self,
        backend: &mut Backend,
        g: &Graph<'_>,
        nodes: &Nodes<'_>,
        batch: &Batch,
        detail: Detail,
    ) -> Result<VisionOutput> {
        let hp = &self.hp;
        let order = &batch.order;
        let per = |data: Vec<f32>, len: usize| -> Vec<Vec<f32>> {
            data.chunks(len).map(|r| r.to_vec()).collect()
        };
        let per_image = hp.tokens_per_image() as usize * hp.llm_hidden as usize;
        let emb_all = per(backend.get_f32(g, nodes.emb)?, per_image);
        let mut out = VisionOutput {
            batch_order: order.clone(),
            debug: nodes
                .keep
                .iter()
                .map(|(n, t)| Ok((n.clone(), backend.get_f32(g, *t)?)))
                .collect::<Result<_>>()?,
            embeddings: vec![Vec::new(); order.len()],
            context_applied: vec![false; order.len()],
            ..Default::default()
        };
        for (slot, &i) in order.iter().enumerate() {
            out.embeddings[i] = emb_all[slot].clone();
            out.context_applied[i] = slot < batch.applied;
        }
        if detail != Detail::Embeddings {
            let nc = hp.positions() as usize * hp.hidden as usize;
            let z_all = per(backend.get_f32(g, nodes.z)?, nc);
            let f_all = match &nodes.focal {
                Some(f) => per(backend.get_f32(g, f.crop)?, nc),
                None => Vec::new(),
            };
            out.full_features = vec![Vec::new(); order.len()];
            out.crop_features = vec![Vec::new(); order.len()];
            for (slot, &i) in order.iter().enumerate() {
                out.full_features[i] = z_all[slot].clone();
                out.crop_features[i] = f_all.get(slot).unwrap_or(&z_all[slot]).clone();
            }
        }
        Ok(out)
    }

    /// Images `lo..hi` of a batch of token features [C, N, B].
    fn images<'g>(&self, g: &'g Graph<'_>, x: Tensor<'g>, lo: i64, hi: i64) -> Result<Tensor<'g>> {
        let (c, n) = (self.hp.hidden as usize, self.hp.positions() as usize);
        let k = (hi - lo) as usize;
        let nb = [4 * c, 4 * c * n, 4 * c * n * k];
        g.view(
            x,
            [c as i64, n as i64, hi - lo, 1],
            nb,
            4 * c * n * lo as usize,
        )
    }
}

/// The images of one `encode` call in graph order.
struct Batch {
    /// Input index of each batch slot: the images whose context provider
    /// runs (focal view differs) first.
    order: Vec<usize>,
    /// How many run the context provider (a prefix of `order`).
    applied: usize,
}

/// The inputs and results of one vision graph.
struct Nodes<'g> {
    rgb: Tensor<'g>,
    mask: Tensor<'g>,
    focal: Option<FocalNodes<'g>>,
    merge_idx: Tensor<'g>,
    /// Z of every image.
    z: Tensor<'g>,
    /// The LLM embeddings of every image.
    emb: Tensor<'g>,
    /// `Detail::Debug`'s per-stage states.
    keep: Vec<(String, Tensor<'g>)>,
}

/// The focal branch, present when some image runs the context provider.
struct FocalNodes<'g> {
    rgb: Tensor<'g>,
    mask: Tensor<'g>,
    key_mask: Option<Tensor<'g>>,
    /// F of the applied images.
    crop: Tensor<'g>,
}
