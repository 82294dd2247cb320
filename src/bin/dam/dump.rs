//! `dam dump`: one reference-mode request with every stage written to a
//! safetensors file (the names of the parity fixtures).

use std::path::{Path, PathBuf};

use clap::Args;
use dam::model::Trace;
use dam::vision::Detail;
use dam::{DescribeOptions, Error, Model, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::common::{load_model, ModelArgs};
use crate::inputs::{load_inputs, RegionArgs};

#[derive(Args)]
pub struct DumpArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, short = 'i', required = true)]
    image: Vec<PathBuf>,
    #[arg(long, required = true)]
    mask: Vec<PathBuf>,
    /// The user text without <image> (default: the model's query).
    #[arg(long, short = 'q')]
    query: Option<String>,
    #[arg(long, default_value_t = 24)]
    max_tokens: usize,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Also write every vision layer's output (debug.* names).
    #[arg(long)]
    debug: bool,
}

pub fn run(a: DumpArgs) -> Result<()> {
    if a.image.len() != a.mask.len() {
        return Err(Error::InvalidArgument(format!(
            "{} images but {} masks",
            a.image.len(),
            a.mask.len()
        )));
    }
    let inputs = load_inputs(&RegionArgs::masks(a.image.clone(), a.mask.clone()))?;
    let frames = inputs.frames()?;
    let model = load_model(&a.model, true)?;
    let mut session = model.session()?;
    let opts = DescribeOptions {
        query: a.query.clone(),
        max_new_tokens: a.max_tokens,
        ..DescribeOptions::greedy()
    };
    let detail = if a.debug {
        Detail::Debug
    } else {
        Detail::Features
    };
    let (cap, trace) = session.trace(&frames, &opts, detail)?;
    write_dump(&a.out, &model, &trace)?;
    let json = serde_json::json!({
        "frames": cap.frames.iter().map(|f| serde_json::json!({
            "focal_window_xyxy": f.window.to_array(),
            "context_provider_applied": f.context_applied,
            "mask_pixels": f.mask_pixels,
        })).collect::<Vec<_>>(),
        "dropped_frames": cap.dropped_frames,
        "prompt": trace.prompt,
        "prompt_ids": trace.prompt_ids,
        "output_ids": cap.tokens,
        "text": cap.text,
        "stopped_by_eos": cap.stopped_by_eos,
    });
    println!("{json}");
    Ok(())
}

/// Little-endian bytes of a float/int slice, for safetensors.
fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// The named tensors of a dump: (name, type, shape, little-endian bytes).
#[derive(Default)]
pub struct Tensors(Vec<(String, Dtype, Vec<usize>, Vec<u8>)>);

impl Tensors {
    pub fn f32(&mut self, name: &str, shape: Vec<usize>, data: &[f32]) {
        let bytes = le(data, f32::to_le_bytes);
        self.0.push((name.to_string(), Dtype::F32, shape, bytes));
    }

    fn i64(&mut self, name: &str, data: &[i64]) {
        let bytes = le(data, i64::to_le_bytes);
        self.0
            .push((name.to_string(), Dtype::I64, vec![data.len()], bytes));
    }

    pub fn u8(&mut self, name: &str, shape: Vec<usize>, data: &[u8]) {
        self.0
            .push((name.to_string(), Dtype::U8, shape, data.to_vec()));
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let views: Vec<(String, TensorView)> = self
            .0
            .iter()
            .map(|(n, d, s, b)| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Backend(format!("{n}: {e}")))
            })
            .collect::<Result<_>>()?;
        let bytes = safetensors::serialize(views, &None)
            .map_err(|e| Error::Backend(format!("safetensors: {e}")))?;
        std::fs::write(out, bytes).map_err(|e| Error::io(out, e))
    }
}

fn write_dump(out: &Path, model: &Model, t: &Trace) -> Result<()> {
    let mut ts = Tensors::default();
    vision_tensors(&mut ts, model, t);
    llm_tensors(&mut ts, model, t)?;
    ts.write(out)
}

/// The vision stage's inputs and outputs, frames stacked.
fn vision_tensors(ts: &mut Tensors, model: &Model, t: &Trace) {
    let hp = &model.vision.hp;
    let (s, n, c) = (
        hp.image_size as usize,
        hp.positions() as usize,
        hp.hidden as usize,
    );
    let (tk, h) = (hp.tokens_per_image() as usize, hp.llm_hidden as usize);
    let nf = t.views.len();
    // Single images have no frame axis (the fixtures' convention).
    let shape = |rest: &[usize]| -> Vec<usize> {
        if nf > 1 {
            std::iter::once(nf).chain(rest.iter().copied()).collect()
        } else {
            rest.to_vec()
        }
    };
    let cat = |f: &dyn Fn(usize) -> Vec<f32>| -> Vec<f32> { (0..nf).flat_map(f).collect() };
    let v = &t.vision;
    ts.f32(
        "pixel_values",
        shape(&[8, s, s]),
        &cat(&|k| [t.views[k].full.clone(), t.views[k].focal.clone()].concat()),
    );
    ts.f32(
        "full_features",
        shape(&[n, c]),
        &cat(&|k| v.full_features[k].clone()),
    );
    ts.f32(
        "crop_features",
        shape(&[n, c]),
        &cat(&|k| v.crop_features[k].clone()),
    );
    ts.f32(
        "projector_output",
        shape(&[tk, h]),
        &cat(&|k| v.embeddings[k].clone()),
    );
}

/// The LLM's spliced input, its logits, the vision debug states and the ids.
fn llm_tensors(ts: &mut Tensors, model: &Model, t: &Trace) -> Result<()> {
    let (h, c) = (
        model.vision.hp.llm_hidden as usize,
        model.vision.hp.hidden as usize,
    );
    // The spliced LLM input: token embedding rows, image rows at each -200.
    let mut embeds = Vec::new();
    let mut img = 0;
    for &id in &t.prompt_ids {
        if id == -200 {
            embeds.extend_from_slice(&t.vision.embeddings[img]);
            img += 1;
        } else {
            model.llm.embed_tokens(&[id as i32], &mut embeds)?;
        }
    }
    ts.f32("llm_inputs_embeds", vec![embeds.len() / h, h], &embeds);
    let g = &t.generation;
    ts.f32("first_logits", vec![g.first_logits.len()], &g.first_logits);
    let v = g.first_logits.len();
    ts.f32(
        "step_logits",
        vec![g.step_logits.len(), v],
        &g.step_logits.concat(),
    );
    for (name, data) in &t.vision.debug {
        // Debug states are in batch order; the fixtures hold them for single images.
        ts.f32(name, vec![data.len() / c, c], data);
    }
    let ids: Vec<i64> = g.tokens.iter().map(|&x| x as i64).collect();
    ts.i64("prompt_ids", &t.prompt_ids);
    ts.i64("output_ids", &ids);
    Ok(())
}
