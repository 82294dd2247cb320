//! Hyper-parameters of a segmenter file: the shared ones and the image
//! encoder's (SAM's ViT or MobileSAM's TinyViT), read, checked and written
//! with the keys of [`super::tensors::key`]; sizes of the tables' rows.

use super::tensors::{defs, key, Dim, Part, TensorDef, SEGMENTER_ARCH};
use crate::error::{Error, Result};
use crate::gguf_file::GgufHeader;
use crate::weights::{check_tensor_set, check_tower, layer_name, MAX_LAYERS, MAX_WIDTH};
use Dim::*;
use Part::*;

/// Which image encoder a segmenter file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    /// SAM's ViT (transformers' `SamVisionEncoder`).
    Vit,
    /// MobileSAM's TinyViT.
    TinyVit,
}

impl EncoderKind {
    pub fn name(self) -> &'static str {
        match self {
            EncoderKind::Vit => "vit",
            EncoderKind::TinyVit => "tiny_vit",
        }
    }
}

/// How the preprocessing scales pixels before normalising them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelScale {
    /// `x / 255` (in f64, rounded to f32), then `(x - mean) / std`:
    /// transformers' `SamProcessor`.
    Unit,
    /// `(x - mean) / std` on the 0..255 values in f32: the official
    /// `Sam.preprocess` (MobileSAM's `SamPredictor`).
    Byte,
}

impl PixelScale {
    pub fn name(self) -> &'static str {
        match self {
            PixelScale::Unit => "unit",
            PixelScale::Byte => "byte",
        }
    }
}

/// SAM's ViT encoder (transformers' `SamVisionConfig`).
#[derive(Clone, Debug, PartialEq)]
pub struct VitHparams {
    pub hidden: u32,
    pub heads: u32,
    pub layers: u32,
    pub ff: u32,
    pub eps: f32,
    /// Side of the windowed layers' attention windows.
    pub window: u32,
    /// Layers with global attention (the others are windowed).
    pub global_layers: Vec<u32>,
}

/// MobileSAM's TinyViT encoder: per stage (stage 0 is the MBConv stage,
/// the others attention stages), a patch merging between stages (stride 2,
/// the last one 1, as the official stage resolutions assume).
#[derive(Clone, Debug, PartialEq)]
pub struct TinyVitHparams {
    pub widths: Vec<u32>,
    pub depths: Vec<u32>,
    /// Attention heads (0 for stage 0).
    pub heads: Vec<u32>,
    /// Attention window sides (0 for stage 0).
    pub windows: Vec<u32>,
    /// MLP widths; stage 0: the MBConv expansion width.
    pub ff: Vec<u32>,
    pub local_conv: u32,
    pub eps: f32,
}

impl TinyVitHparams {
    /// The stage and block of attention block `i` (counted across stages).
    pub fn block_stage(&self, i: usize) -> (usize, usize) {
        let mut i = i;
        for (s, &d) in self.depths.iter().enumerate().skip(1) {
            if i < d as usize {
                return (s, i);
            }
            i -= d as usize;
        }
        (self.depths.len().saturating_sub(1), i)
    }
    /// Stride of the patch merging after stage `i`.
    pub fn merge_stride(&self, i: usize) -> u32 {
        if i + 2 == self.widths.len() {
            1
        } else {
            2
        }
    }
    /// The input side's divisor: 4 (patch embedding) times the merges'.
    pub fn total_stride(&self) -> u32 {
        (0..self.widths.len().saturating_sub(1)).fold(4, |s, i| s * self.merge_stride(i))
    }
}

/// The image encoder's hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderHparams {
    Vit(VitHparams),
    TinyVit(TinyVitHparams),
}

/// Hyper-parameters of a segmenter file (SAM's `SamConfig` and processor,
/// or MobileSAM's modules and predictor).
#[derive(Clone, Debug, PartialEq)]
pub struct SegmenterHparams {
    /// Encoder input side S (the processor pads to S x S).
    pub image_size: u32,
    /// S / G: the ViT's patch size, TinyViT's total stride.
    pub patch_size: u32,
    pub encoder: EncoderHparams,
    /// Neck / prompt / decoder width.
    pub out: u32,
    pub mask_in: u32,
    pub dec_layers: u32,
    pub dec_heads: u32,
    pub dec_ff: u32,
    pub dec_eps: f32,
    pub downsample: u32,
    pub multimask: u32,
    pub iou_depth: u32,
    pub iou_hidden: u32,
    /// The processor's resize target for the longest side.
    pub longest_edge: u32,
    pub pixel_scale: PixelScale,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// A list of small non-negative integers from a key.
fn u32_list(h: &GgufHeader, key: &str) -> Result<Vec<u32>> {
    let a = h
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::InvalidModel(format!("missing list key {key}")))?;
    a.iter()
        .map(|v| v.as_i64().and_then(|x| u32::try_from(x).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| Error::InvalidModel(format!("{key} is not a list of sizes")))
}

/// A usable epsilon (not NaN, not <= 0).
fn positive(x: f32) -> bool {
    x > 0.0
}

fn write_u32_list(w: &mut crate::sys::gguf::GgufWriter, key: &str, v: &[u32]) -> Result<()> {
    let v: Vec<i32> = v.iter().map(|&x| x as i32).collect();
    w.set_arr_i32(key, &v)
}

impl VitHparams {
    fn validate(&self, hp: &SegmenterHparams) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        check_tower(
            (hp.image_size, hp.patch_size),
            (self.hidden, self.heads),
            &[("ff", self.ff)],
        )?;
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return bad(format!("{} encoder layers", self.layers));
        }
        if self.window == 0 || self.window > hp.grid().max(1) * 2 {
            return bad(format!("window size {}", self.window));
        }
        if self.global_layers.iter().any(|&l| l >= self.layers) {
            return bad(format!(
                "global attention layers {:?} of {}",
                self.global_layers, self.layers
            ));
        }
        if !positive(self.eps) {
            return bad("layer norm epsilon must be positive".into());
        }
        Ok(())
    }

    fn from_gguf(h: &GgufHeader) -> Result<Self> {
        Ok(VitHparams {
            hidden: h.req_u32(key::HIDDEN)?,
            heads: h.req_u32(key::HEADS)?,
            layers: h.req_u32(key::LAYERS)?,
            ff: h.req_u32(key::FF)?,
            eps: h.req_f32(key::EPS)?,
            window: h.req_u32(key::WINDOW)?,
            global_layers: u32_list(h, key::GLOBAL_LAYERS)?,
        })
    }

    fn write_keys(&self, w: &mut crate::sys::gguf::GgufWriter) -> Result<()> {
        for (k, v) in [
            (key::HIDDEN, self.hidden),
            (key::HEADS, self.heads),
            (key::LAYERS, self.layers),
            (key::FF, self.ff),
            (key::WINDOW, self.window),
        ] {
            w.set_u32(k, v)?;
        }
        w.set_f32(key::EPS, self.eps)?;
        write_u32_list(w, key::GLOBAL_LAYERS, &self.global_layers)
    }
}

impl TinyVitHparams {
    fn validate(&self, hp: &SegmenterHparams) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        let n = self.widths.len();
        if !(2..=8).contains(&n)
            || [&self.depths, &self.heads, &self.windows, &self.ff]
                .iter()
                .any(|v| v.len() != n)
        {
            return bad(format!(
                "TinyViT with {n} stages and lists of other lengths"
            ));
        }
        let sizes = self.widths.iter().chain(&self.ff);
        if sizes.clone().any(|&w| w == 0 || w > MAX_WIDTH) || self.widths[0] % 2 != 0 {
            return bad(format!(
                "TinyViT widths {:?}, MLP widths {:?}",
                self.widths, self.ff
            ));
        }
        if self.depths.iter().any(|&d| d == 0 || d > MAX_LAYERS) {
            return bad(format!("TinyViT depths {:?}", self.depths));
        }
        let stride = self.total_stride();
        if hp.image_size == 0
            || hp.image_size > crate::weights::MAX_SIDE
            || hp.image_size % stride != 0
            || hp.patch_size != stride
        {
            return bad(format!(
                "TinyViT input side {} with total stride {stride} (patch size {})",
                hp.image_size, hp.patch_size
            ));
        }
        for s in 1..n {
            let (w, h, win) = (self.widths[s], self.heads[s], self.windows[s]);
            if h == 0 || w % h != 0 || win == 0 || win > hp.image_size / 4 {
                return bad(format!(
                    "TinyViT stage {s}: width {w}, {h} heads, window {win}"
                ));
            }
        }
        if self.local_conv % 2 == 0 || self.local_conv > 7 || !positive(self.eps) {
            return bad(format!(
                "TinyViT local conv {} / epsilon {}",
                self.local_conv, self.eps
            ));
        }
        Ok(())
    }

    fn from_gguf(h: &GgufHeader) -> Result<Self> {
        Ok(TinyVitHparams {
            widths: u32_list(h, key::TV_WIDTHS)?,
            depths: u32_list(h, key::TV_DEPTHS)?,
            heads: u32_list(h, key::TV_HEADS)?,
            windows: u32_list(h, key::TV_WINDOWS)?,
            ff: u32_list(h, key::TV_FF)?,
            local_conv: h.req_u32(key::TV_LOCAL_CONV)?,
            eps: h.req_f32(key::TV_EPS)?,
        })
    }

    fn write_keys(&self, w: &mut crate::sys::gguf::GgufWriter) -> Result<()> {
        write_u32_list(w, key::TV_WIDTHS, &self.widths)?;
        write_u32_list(w, key::TV_DEPTHS, &self.depths)?;
        write_u32_list(w, key::TV_HEADS, &self.heads)?;
        write_u32_list(w, key::TV_WINDOWS, &self.windows)?;
        write_u32_list(w, key::TV_FF, &self.ff)?;
        w.set_u32(key::TV_LOCAL_CONV, self.local_conv)?;
        w.set_f32(key::TV_EPS, self.eps)
    }
}

impl SegmenterHparams {
    /// Patches per side of the image embedding.
    pub fn grid(&self) -> u32 {
        self.image_size / self.patch_size
    }

    pub fn encoder_kind(&self) -> EncoderKind {
        match self.encoder {
            EncoderHparams::Vit(_) => EncoderKind::Vit,
            EncoderHparams::TinyVit(_) => EncoderKind::TinyVit,
        }
    }

    /// The size `d` of instance `i` of a row of `part` (0 for a size of the
    /// other encoder kind, which its table never asks for).
    fn dim(&self, d: Dim, part: Part, i: usize) -> u64 {
        let (vit, tv) = match &self.encoder {
            EncoderHparams::Vit(v) => (Some(v), None),
            EncoderHparams::TinyVit(t) => (None, Some(t)),
        };
        let v = |f: fn(&VitHparams) -> u32| vit.map_or(0, f);
        // TinyViT's stage of the row (a merging's input stage).
        let stage = tv.map_or(0, |t| match part {
            AttnBlock => t.block_stage(i).0,
            Merge => i,
            _ => 0,
        });
        let t = |f: fn(&TinyVitHparams) -> &Vec<u32>, s: usize| {
            tv.and_then(|t| f(t).get(s).copied()).unwrap_or(0)
        };
        u64::from(match d {
            Hidden => v(|v| v.hidden),
            Ff => v(|v| v.ff),
            HeadDim => v(|v| v.hidden / v.heads.max(1)),
            Patch => self.patch_size,
            Rgb => 3,
            Grid => self.grid(),
            RelPos => vit.map_or(0, |v| {
                let side = if v.global_layers.contains(&(i as u32)) {
                    self.grid()
                } else {
                    v.window
                };
                2 * side - 1
            }),
            Out => self.out,
            Out2 => self.out / 2,
            Out4 => self.out / 4,
            Out8 => self.out / 8,
            Inner => self.out / self.downsample.max(1),
            DecFf => self.dec_ff,
            MaskIn => self.mask_in,
            MaskIn4 => self.mask_in / 4,
            MaskTokens => self.multimask + 1,
            IouHidden => self.iou_hidden,
            One => 1,
            Two => 2,
            Three => 3,
            Enc => match tv {
                Some(t) => t.widths.last().copied().unwrap_or(0),
                None => v(|v| v.hidden),
            },
            S0 => t(|t| &t.widths, 0),
            S0Half => t(|t| &t.widths, 0) / 2,
            StageW | MergeIn => t(|t| &t.widths, stage),
            StageFf => t(|t| &t.ff, stage),
            StageHeads => t(|t| &t.heads, stage),
            Offsets => t(|t| &t.windows, stage).pow(2),
            MergeOut => t(|t| &t.widths, stage + 1),
            LocalK => tv.map_or(0, |t| t.local_conv),
        })
    }

    /// The file shape in PyTorch order of instance `i` of a table row.
    pub fn shape(&self, def: &TensorDef, i: usize) -> Vec<u64> {
        def.row
            .shape
            .iter()
            .map(|&d| self.dim(d, def.row.part, i))
            .collect()
    }

    /// The GGUF shape (ggml order) of instance `i` of a table row, without
    /// trailing 1s (GGUF stores a tensor's rank without them).
    pub fn ne(&self, def: &TensorDef, i: usize) -> Vec<u64> {
        let mut s = self.shape(def, i);
        s.reverse();
        while s.len() > 1 && s.last() == Some(&1) {
            s.pop();
        }
        s
    }

    /// How many instances of a table row the file holds.
    pub fn count(&self, part: Part) -> usize {
        let tv = match &self.encoder {
            EncoderHparams::TinyVit(t) => Some(t),
            EncoderHparams::Vit(_) => None,
        };
        (match part {
            Global => 1,
            EncLayer => match &self.encoder {
                EncoderHparams::Vit(v) => v.layers,
                EncoderHparams::TinyVit(_) => 0,
            },
            DecLayer => self.dec_layers,
            PointEmbed => 4,
            Hyper => self.multimask + 1,
            IouMid => self.iou_depth - 2,
            ConvBlock => tv.map_or(0, |t| t.depths[0]),
            Merge => tv.map_or(0, |t| t.widths.len() as u32 - 1),
            AttnBlock => tv.map_or(0, |t| t.depths[1..].iter().sum()),
        }) as usize
    }

    /// Every (gguf name, def, instance) of the file, in file order.
    pub fn tensor_names(&self) -> Vec<(String, &'static TensorDef, usize)> {
        defs(self.encoder_kind())
            .flat_map(|def| {
                (0..self.count(def.row.part)).map(move |i| (layer_name(def.row.gguf, i), def, i))
            })
            .collect()
    }

    /// Checks the values are usable before any ggml call.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidModel(m));
        match &self.encoder {
            EncoderHparams::Vit(v) => v.validate(self)?,
            EncoderHparams::TinyVit(t) => t.validate(self)?,
        }
        check_tower(
            (self.image_size, self.patch_size),
            (self.out, self.dec_heads),
            &[("decoder ff", self.dec_ff), ("iou hidden", self.iou_hidden)],
        )?;
        if self.longest_edge != self.image_size {
            return bad(format!(
                "longest edge {} differs from the encoder's input side {}",
                self.longest_edge, self.image_size
            ));
        }
        let inner = self.out / self.downsample.max(1);
        if self.out % 8 != 0
            || self.downsample == 0
            || self.out % self.downsample != 0
            || inner % self.dec_heads != 0
        {
            return bad(format!(
                "decoder width {} with {} heads and downsample rate {}",
                self.out, self.dec_heads, self.downsample
            ));
        }
        if self.mask_in == 0 || self.mask_in % 4 != 0 || self.mask_in > MAX_WIDTH {
            return bad(format!("{} mask input channels", self.mask_in));
        }
        if self.dec_layers == 0 || self.dec_layers > MAX_LAYERS {
            return bad(format!("{} decoder layers", self.dec_layers));
        }
        if self.multimask == 0 || self.multimask > 16 || !(2..=16).contains(&self.iou_depth) {
            return bad(format!(
                "{} mask outputs, IoU head depth {}",
                self.multimask, self.iou_depth
            ));
        }
        if !positive(self.dec_eps) {
            return bad("layer norm epsilon must be positive".into());
        }
        if self.image_std.iter().any(|&s| s == 0.0 || !s.is_finite())
            || self.image_mean.iter().any(|m| !m.is_finite())
        {
            return bad("image mean / std must be finite, std non-zero".into());
        }
        Ok(())
    }

    /// Reads and validates the hyper-parameters of a segmenter file.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self> {
        let arch = h.req_str("general.architecture")?;
        if arch != SEGMENTER_ARCH {
            return Err(Error::InvalidModel(format!(
                "general.architecture is '{arch}', expected '{SEGMENTER_ARCH}'"
            )));
        }
        let resample = h.req_str(key::RESAMPLE)?;
        if resample != "bilinear" {
            return Err(Error::InvalidModel(format!(
                "resample {resample:?} (bilinear supported)"
            )));
        }
        // Files written before MobileSAM have neither key: SAM's values.
        let encoder = match h.get(key::ENCODER).map(|v| v.as_str()) {
            None | Some(Some("vit")) => EncoderHparams::Vit(VitHparams::from_gguf(h)?),
            Some(Some("tiny_vit")) => EncoderHparams::TinyVit(TinyVitHparams::from_gguf(h)?),
            Some(k) => {
                return Err(Error::InvalidModel(format!(
                    "{} {k:?} (vit or tiny_vit supported)",
                    key::ENCODER
                )))
            }
        };
        let pixel_scale = match h.get(key::PIXEL_SCALE).map(|v| v.as_str()) {
            None | Some(Some("unit")) => PixelScale::Unit,
            Some(Some("byte")) => PixelScale::Byte,
            Some(k) => {
                return Err(Error::InvalidModel(format!(
                    "{} {k:?} (unit or byte supported)",
                    key::PIXEL_SCALE
                )))
            }
        };
        let hp = SegmenterHparams {
            image_size: h.req_u32(key::IMAGE_SIZE)?,
            patch_size: h.req_u32(key::PATCH_SIZE)?,
            encoder,
            out: h.req_u32(key::OUT)?,
            mask_in: h.req_u32(key::MASK_IN)?,
            dec_layers: h.req_u32(key::DEC_LAYERS)?,
            dec_heads: h.req_u32(key::DEC_HEADS)?,
            dec_ff: h.req_u32(key::DEC_FF)?,
            dec_eps: h.req_f32(key::DEC_EPS)?,
            downsample: h.req_u32(key::DOWNSAMPLE)?,
            multimask: h.req_u32(key::MULTIMASK)?,
            iou_depth: h.req_u32(key::IOU_DEPTH)?,
            iou_hidden: h.req_u32(key::IOU_HIDDEN)?,
            longest_edge: h.req_u32(key::LONGEST_EDGE)?,
            pixel_scale,
            image_mean: h.req_f32_array(key::IMAGE_MEAN)?,
            image_std: h.req_f32_array(key::IMAGE_STD)?,
        };
        hp.validate()?;
        Ok(hp)
    }

    /// Checks that the file holds every tensor of the table with the right
    /// shape and an allowed type, and nothing else.
    pub fn check_tensors(&self, h: &GgufHeader) -> Result<()> {
        let expected = self.tensor_names();
        check_tensor_set(
            h,
            expected
                .iter()
                .map(|(name, def, i)| (name.as_str(), self.ne(def, *i), def.row.kind)),
        )
    }

    /// Writes the keys of this struct (the converter's half of `from_gguf`):
    /// the shared ones, then the encoder's.
    pub fn write_keys(&self, w: &mut crate::sys::gguf::GgufWriter) -> Result<()> {
        w.set_str("general.architecture", SEGMENTER_ARCH)?;
        w.set_str(key::ENCODER, self.encoder_kind().name())?;
        for (k, v) in [
            (key::IMAGE_SIZE, self.image_size),
            (key::PATCH_SIZE, self.patch_size),
            (key::OUT, self.out),
            (key::MASK_IN, self.mask_in),
            (key::DEC_LAYERS, self.dec_layers),
            (key::DEC_HEADS, self.dec_heads),
            (key::DEC_FF, self.dec_ff),
            (key::DOWNSAMPLE, self.downsample),
            (key::MULTIMASK, self.multimask),
            (key::IOU_DEPTH, self.iou_depth),
            (key::IOU_HIDDEN, self.iou_hidden),
            (key::LONGEST_EDGE, self.longest_edge),
        ] {
            w.set_u32(k, v)?;
        }
        w.set_f32(key::DEC_EPS, self.dec_eps)?;
        w.set_str(key::PIXEL_SCALE, self.pixel_scale.name())?;
        w.set_arr_f32(key::IMAGE_MEAN, &self.image_mean)?;
        w.set_arr_f32(key::IMAGE_STD, &self.image_std)?;
        w.set_str(key::RESAMPLE, "bilinear")?;
        match &self.encoder {
            EncoderHparams::Vit(v) => v.write_keys(w),
            EncoderHparams::TinyVit(t) => t.write_keys(w),
        }
    }
}
