//! The generated part of `gguf/README.md`: every key and tensor of the
//! files, rendered from the same tables the converter and the loader use
//! (`weights::VISION_TENSORS`, `llm::tensors::LLM_TENSORS`, `weights::key`,
//! `segmenter::tensors`).
//! A unit test checks the README holds this text verbatim;
//! `DAM_BLESS=1 cargo test --release --lib convert::doc` rewrites it.

use super::llm::llm_key as lk;
use super::vision::WEIGHT_TYPE_KEY;
use crate::llm::tensors::{LDim, LLM_TENSORS};
use crate::segmenter::tensors::{self as seg, key as sk, TensorDef as SegDef};
use crate::weights::{key, Dim, Kind, Part, VISION_TENSORS};

/// One documented key.
#[derive(Clone, Copy, Debug)]
pub struct KeyDoc {
    pub key: &'static str,
    pub ty: &'static str,
    pub meaning: &'static str,
}

const fn k(key: &'static str, ty: &'static str, meaning: &'static str) -> KeyDoc {
    KeyDoc { key, ty, meaning }
}

/// Every key of the vision file, in the order the converter writes them.
pub const VISION_KEYS: &[KeyDoc] = &[
    k("general.architecture", "string", "`dam-vision`"),
    k(key::IMAGE_SIZE, "u32", "input side S in pixels (both views are S x S)"),
    k(key::PATCH_SIZE, "u32", "patch size P (stride-P convolution; trailing S mod P pixels are ignored)"),
    k(key::HIDDEN, "u32", "tower width C"),
    k(
        key::HIDDEN_IN,
        "u32",
        "input width Ci of the matrices reading the C-wide stream (optional, absent: C; quantized files: may include zero columns, see below)",
    ),
    k(key::HEADS, "u32", "tower attention heads"),
    k(key::LAYERS, "u32", "layers of the original tower (the file holds only the L used ones)"),
    k(
        key::FF,
        "u32",
        "tower MLP width FF (quantized files: may include zero units, see below)",
    ),
    k(key::EPS, "f32", "tower LayerNorm epsilon"),
    k(key::ACT, "string", "tower MLP activation (`gelu_pytorch_tanh` or `gelu`)"),
    k(key::SELECT_LAYER, "i32", "index into hidden_states = [embeddings, layer 0, ...]; -2 for DAM, so L = layers - 1"),
    k(key::MASK_CHANNELS, "u32", "mask channels M of the mask patch embedding (1)"),
    k(key::IMAGE_MEAN, "f32[3]", "normalisation mean per RGB channel"),
    k(key::IMAGE_STD, "f32[3]", "normalisation std per RGB channel"),
    k(key::RESAMPLE, "string", "resize filter of the views (`bicubic`, PIL semantics)"),
    k(key::CTX_TYPE, "string", "context provider type (`cross_attn_end_to_all`)"),
    k(key::CTX_LAYERS, "u32", "cross-attention blocks of the checkpoint (the file holds the L used ones)"),
    k(key::CTX_HEADS, "u32", "cross-attention heads"),
    k(
        key::CTX_FF,
        "u32",
        "cross-attention MLP width CFF (as FF)",
    ),
    k(key::CTX_EPS, "f32", "cross-attention LayerNorm epsilon"),
    k(key::CTX_ACT, "string", "cross-attention MLP activation"),
    k(key::CTX_MASKED, "bool", "queries only see full-view tokens that overlap the mask"),
    k(key::PROJ_TYPE, "string", "projector type (`mlp_downsample`)"),
    k(key::PROJ_EPS, "f32", "projector LayerNorm epsilon (1e-5, nn.LayerNorm's default)"),
    k(key::PROJ_OUT, "u32", "projector output width H (the LLM width)"),
    k(key::CONV_MODE, "string", "prompt template (`v1`)"),
    k(key::IMAGE_PREFIX, "string", "text before `<image>` in single-image prompts (\"\" for DAM-3B, \"Image: \" for the joint model)"),
    k(key::VIDEO_PREFIX, "string", "text before the frames' `<image>`s in video prompts"),
    k(key::DEFAULT_QUERY, "string", "default image query"),
    k(key::DEFAULT_VIDEO_QUERY, "string", "default video query"),
    k(key::MAX_FRAMES, "u32", "most video frames (top-level `num_video_frames`)"),
    k("general.name", "string", "model name given to the converter"),
    k(WEIGHT_TYPE_KEY, "string", "requested type of the weight matrices (`f16`, `q8_0`, `q4_k`, ...)"),
];

/// Every key of the LLM file, in the order the converter writes them.
pub const LLM_KEYS: &[KeyDoc] = &[
    k(lk::ARCH, "string", "`llama`"),
    k(lk::NAME, "string", "model name given to the converter"),
    k(
        lk::FILE_TYPE,
        "u32",
        "llama_ftype: 0 all f32, 1 mostly f16, 7 mostly q8_0, 32 mostly bf16, 15 Q4_K_M, ...",
    ),
    k(lk::QUANT_VERSION, "u32", "ggml quantization version (2)"),
    k(lk::VOCAB_SIZE, "u32", "vocabulary size V (`vocab_size`)"),
    k(
        lk::CONTEXT,
        "u32",
        "training context (`max_position_embeddings`)",
    ),
    k(lk::EMBD, "u32", "width H (`hidden_size`)"),
    k(lk::BLOCKS, "u32", "layers (`num_hidden_layers`)"),
    k(lk::FF, "u32", "MLP width F (`intermediate_size`)"),
    k(lk::ROPE_DIM, "u32", "rotary dimensions = head dim d"),
    k(lk::HEADS, "u32", "attention heads (`num_attention_heads`)"),
    k(
        lk::KV_HEADS,
        "u32",
        "key/value heads (`num_key_value_heads`)",
    ),
    k(
        lk::KEY_LEN,
        "u32",
        "head dim d (`head_dim`, else H / heads)",
    ),
    k(lk::VALUE_LEN, "u32", "head dim d"),
    k(lk::ROPE_BASE, "f32", "RoPE theta (`rope_theta`)"),
    k(lk::RMS_EPS, "f32", "RMSNorm epsilon (`rms_norm_eps`)"),
    k(lk::TOK_MODEL, "string", "`llama` (SentencePiece)"),
    k(lk::TOK_PRE, "string", "`default`"),
    k(
        lk::TOKENS,
        "string[V]",
        "pieces of `llm/tokenizer.model`, padded to V with `[PAD{id}]`",
    ),
    k(lk::SCORES, "f32[V]", "piece scores (-10000 for padding)"),
    k(
        lk::TOKEN_TYPE,
        "i32[V]",
        "1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte",
    ),
    k(
        lk::BOS,
        "u32",
        "BOS id (generation_config.json, config.json, tokenizer.model)",
    ),
    k(lk::EOS, "u32", "EOS id (same sources)"),
    k(lk::UNK, "u32", "unknown-token id (tokenizer.model)"),
    k(
        lk::PAD,
        "u32",
        "padding id (`pad_token_id`; absent if none)",
    ),
    k(
        lk::ADD_BOS,
        "bool",
        "prepend BOS (tokenizer_config.json `add_bos_token`, default true)",
    ),
    k(
        lk::ADD_EOS,
        "bool",
        "append EOS (`add_eos_token`, default false)",
    ),
    k(
        lk::ADD_SPACE,
        "bool",
        "SentencePiece dummy prefix (`add_dummy_prefix`)",
    ),
    k(
        lk::REMOVE_WS,
        "bool",
        "SentencePiece `remove_extra_whitespaces`",
    ),
];

/// The keys every segmenter file has, in the order the converter writes
/// them (then the encoder's: [`VIT_KEYS`] or [`TINY_VIT_KEYS`]).
pub const SEGMENTER_KEYS: &[KeyDoc] = &[
    k("general.architecture", "string", "`dam-segmenter`"),
    k(
        sk::ENCODER,
        "string",
        "image encoder: `vit` (SAM) or `tiny_vit` (MobileSAM); absent: `vit`",
    ),
    k(
        sk::IMAGE_SIZE,
        "u32",
        "encoder input side S (the processor pads to S x S)",
    ),
    k(
        sk::PATCH_SIZE,
        "u32",
        "S / G (the ViT's patch size P, TinyViT's total stride); G = S / P embedding positions per side",
    ),
    k(sk::OUT, "u32", "neck / prompt / decoder width O"),
    k(
        sk::MASK_IN,
        "u32",
        "mask-input channels MI of the prompt encoder's mask branch",
    ),
    k(sk::DEC_LAYERS, "u32", "two-way transformer layers"),
    k(sk::DEC_HEADS, "u32", "decoder attention heads"),
    k(sk::DEC_FF, "u32", "decoder MLP width DF"),
    k(
        sk::DOWNSAMPLE,
        "u32",
        "cross-attention downsample rate r (inner width O / r)",
    ),
    k(
        sk::MULTIMASK,
        "u32",
        "multimask outputs (3); K = outputs + 1 mask tokens",
    ),
    k(sk::IOU_DEPTH, "u32", "IoU head layers"),
    k(sk::IOU_HIDDEN, "u32", "IoU head width IH"),
    k(
        sk::LONGEST_EDGE,
        "u32",
        "processor resize target of the longest side (= S)",
    ),
    k(sk::DEC_EPS, "f32", "two-way transformer LayerNorm epsilon"),
    k(
        sk::PIXEL_SCALE,
        "string",
        "`unit`: x / 255 then normalise (transformers); `byte`: normalise 0..255 (official predictor); absent: `unit`",
    ),
    k(
        sk::IMAGE_MEAN,
        "f32[3]",
        "normalisation mean per RGB channel",
    ),
    k(sk::IMAGE_STD, "f32[3]", "normalisation std per RGB channel"),
    k(
        sk::RESAMPLE,
        "string",
        "resize filter (`bilinear`, PIL semantics)",
    ),
    k(
        "general.name",
        "string",
        "model name given to the converter",
    ),
];

/// The keys of a `vit` encoder, in the order the converter writes them.
pub const VIT_KEYS: &[KeyDoc] = &[
    k(sk::HIDDEN, "u32", "encoder width C"),
    k(sk::HEADS, "u32", "encoder attention heads (D = C / heads)"),
    k(sk::LAYERS, "u32", "encoder layers"),
    k(sk::FF, "u32", "encoder MLP width FF"),
    k(
        sk::WINDOW,
        "u32",
        "attention window side of the windowed layers",
    ),
    k(sk::EPS, "f32", "encoder LayerNorm epsilon"),
    k(
        sk::GLOBAL_LAYERS,
        "i32[]",
        "encoder layers with global attention (the others are windowed)",
    ),
];

/// The keys of a `tiny_vit` encoder (one value per stage; stage 0 is the
/// MBConv stage), in the order the converter writes them.
pub const TINY_VIT_KEYS: &[KeyDoc] = &[
    k(sk::TV_WIDTHS, "i32[]", "stage widths W (W0 even)"),
    k(sk::TV_DEPTHS, "i32[]", "blocks per stage"),
    k(
        sk::TV_HEADS,
        "i32[]",
        "attention heads per stage (0 for stage 0)",
    ),
    k(
        sk::TV_WINDOWS,
        "i32[]",
        "attention window side per stage (0 for stage 0)",
    ),
    k(
        sk::TV_FF,
        "i32[]",
        "MLP width per stage; stage 0: the MBConv expansion width",
    ),
    k(
        sk::TV_LOCAL_CONV,
        "u32",
        "depthwise local convolution side LK",
    ),
    k(sk::TV_EPS, "f32", "TinyViT LayerNorm epsilon"),
];

fn ssym(d: seg::Dim) -> &'static str {
    use seg::Dim::*;
    match d {
        Hidden => "C",
        Ff => "FF",
        HeadDim => "D",
        Patch => "P",
        Rgb => "3",
        Grid => "G",
        RelPos => "2s-1",
        Out => "O",
        Out2 => "O/2",
        Out4 => "O/4",
        Out8 => "O/8",
        Inner => "O/r",
        DecFf => "DF",
        MaskIn => "MI",
        MaskIn4 => "MI/4",
        MaskTokens => "K",
        IouHidden => "IH",
        One => "1",
        Two => "2",
        Three => "3",
        Enc => "C|Wn",
        S0 => "W0",
        S0Half => "W0/2",
        StageW => "Ws",
        StageFf => "FFs",
        StageHeads => "Hs",
        Offsets => "ws^2",
        MergeIn => "Wi",
        MergeOut => "Wi+1",
        LocalK => "LK",
    }
}

fn vsym(d: Dim) -> &'static str {
    match d {
        Dim::Hidden => "C",
        Dim::HiddenIn => "Ci",
        Dim::Ff => "FF",
        Dim::CtxFf => "CFF",
        Dim::Patch => "P",
        Dim::Rgb => "3",
        Dim::MaskChannels => "M",
        Dim::Positions => "N",
        Dim::ProjIn => "4C",
        Dim::LlmHidden => "H",
        Dim::One => "1",
    }
}

fn ne<T: Copy>(shape: &[T], sym: impl Fn(T) -> &'static str) -> String {
    let v: Vec<&str> = shape.iter().rev().map(|&d| sym(d)).collect();
    format!("[{}]", v.join(", "))
}

/// How a tensor of `kind` is stored.
fn stored(kind: Kind) -> &'static str {
    match kind {
        Kind::Matrix => "weight type",
        Kind::F32 => "f32",
    }
}

fn keys_table(out: &mut String, keys: &[KeyDoc]) {
    out.push_str("| key | type | meaning |\n|---|---|---|\n");
    for kd in keys {
        out.push_str(&format!("| `{}` | {} | {} |\n", kd.key, kd.ty, kd.meaning));
    }
}

/// The generated markdown (between the README's markers).
pub fn render() -> String {
    let mut s = String::new();
    s.push_str("### Vision file (`*-vision-<type>.gguf`): keys\n\n");
    keys_table(&mut s, VISION_KEYS);
    s.push_str(
        "\n### Vision file: tensors\n\n\
         Symbols: C tower width, Ci the matrices' input width, FF tower MLP width, CFF cross-attention MLP width, P patch size,\n\
         M mask channels, N = (S / P)^2 positions, H LLM width; `{i}` runs over the L used layers\n\
         (L = layers + 1 + select_layer for a negative select_layer). Shapes are ggml `ne` (row length\n\
         first; PyTorch order is the reverse). \"weight type\" is the requested type, or llama.cpp's\n\
         fallback where the row length is not a multiple of its block (k-quants -> q5_0 / q5_1 / q8_0 /\n\
         iq4_nl, legacy quants -> f16), except that q4_k falls back to q4_0 here: ggml's CPU backend\n\
         repacks q4_0 for AVX2 / AVX-512 / AMX / NEON and not q5_0, which made the q4_k vision file\n\
         slower than the smaller q4_0 one (`GgmlType::repackable_fallback_for_row`). In a quantized file FF and CFF are the checkpoint's widths\n\
         rounded up to a multiple of the type's block where that adds at most 1/8 (SigLIP's 4304 ->\n\
         4320 for 32-blocks, 4352 for k-quants): the added units have zero `ffn_up` rows and bias and\n\
         zero `ffn_down` columns, so outputs are unchanged and `ffn_down` is stored in the requested\n\
         type. Likewise Ci is C rounded up where that adds at most 1/8 (1152 -> 1280 for k-quants):\n\
         the engine pads those matrices' inputs with zeros, so the extra columns multiply zeros,\n\
         and the matrices are stored in the requested type (on AVX2, ggml's repacked q4_K product\n\
         is 1.6x faster per value than q4_0's). Tower names may also carry the `vision_model.` prefix in the checkpoint. File order:\n\
         this table's order, each `{i}` row repeated for i = 0..L-1.\n\n",
    );
    s.push_str(
        "| GGUF name | checkpoint name | folder | ne | stored as |\n|---|---|---|---|---|\n",
    );
    for d in VISION_TENSORS {
        let folder = match d.part {
            Part::Tower | Part::TowerLayer => "vision_tower",
            Part::ContextLayer => "context_provider",
            Part::Projector => "mm_projector",
        };
        s.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} |\n",
            d.gguf,
            d.hf,
            folder,
            ne(d.shape, vsym),
            stored(d.kind)
        ));
    }
    s.push_str("\n### LLM file (`*-llm-<type>.gguf`): keys\n\n");
    keys_table(&mut s, LLM_KEYS);
    s.push_str(
        "\n### LLM file: tensors\n\n\
         Symbols: V vocabulary, H width, F MLP width, Hq = heads * d, Hkv = kv heads * d. Q and K rows\n\
         are permuted as llama.cpp's converter does for Hugging Face Llama weights\n\
         (`w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2)`, n_head = kv heads for K).\n\
         `output.weight` is omitted when `tie_word_embeddings` is true and the checkpoint has no\n\
         `lm_head.weight` (llama.cpp then uses `token_embd.weight`). File order: the three global\n\
         tensors, then layer by layer.\n\n",
    );
    s.push_str("| GGUF name | checkpoint name (`llm/`) | ne | stored as |\n|---|---|---|---|\n");
    for d in LLM_TENSORS {
        let perm = if d.permute.is_some() {
            " (rows permuted)"
        } else {
            ""
        };
        s.push_str(&format!(
            "| `{}` | `{}` | {} | {}{perm} |\n",
            d.gguf,
            d.hf,
            ne(d.shape, LDim::symbol),
            stored(d.kind)
        ));
    }
    render_segmenter(&mut s);
    s
}

fn render_segmenter(s: &mut String) {
    s.push_str("\n### Segmenter file (`*-segmenter-<type>.gguf`): keys\n\n");
    keys_table(s, SEGMENTER_KEYS);
    s.push_str("\nWith `dam.segmenter.encoder` = `vit` (SAM):\n\n");
    keys_table(s, VIT_KEYS);
    s.push_str("\nWith `dam.segmenter.encoder` = `tiny_vit` (MobileSAM):\n\n");
    keys_table(s, TINY_VIT_KEYS);
    s.push_str(
        "\n### Segmenter file: tensors\n\n\
         The encoder's tensors, then the neck's, prompt encoder's and decoder's. Symbols as in the\n\
         keys; shapes are ggml `ne`; trailing 1s are not stored.\n\n\
         SAM (`vit`), from a Hugging Face `SamModel` folder: s is the attention side of encoder\n\
         layer i (the window, or G for a global layer). `{i}` runs over the encoder layers\n\
         (`enc.blk`). `qkv` is split into thirds.\n\n",
    );
    seg_table(s, seg::VIT_TENSORS);
    s.push_str(
        "\nMobileSAM (`tiny_vit`), from the official `mobile_sam.pt` state dict saved as\n\
         `model.safetensors` (`python -c \"import torch, safetensors.torch as s; s.save_file({k:\n\
         v.contiguous() for k, v in torch.load('mobile_sam.pt').items()}, 'model.safetensors')\"`),\n\
         with an optional `mobilesam.json` beside it (`image_size`, default 1024; `decoder_heads`,\n\
         default 8: what the state dict does not hold). `{i}` runs over stage 0's MBConv blocks\n\
         (`enc.conv`), the patch mergings (`enc.merge`, after stage i; stride 2, the last one 1) and\n\
         the attention blocks of stages 1.. counted across stages (`enc.blk`; checkpoint\n\
         `layers.{stage}.blocks.{block}`); s is the row's stage. Each `Conv2d_BN` (checkpoint name:\n\
         its prefix) is stored with its eval-mode BatchNorm folded in (`Conv2d_BN.fuse`), 1x1 ones\n\
         as matrices; `qkv` (rows per head [q, k, v]) is split per head; the attention biases\n\
         [heads, offsets] are stored transposed. The shared tensors below have the official names\n\
         (`image_encoder.neck.N`, `prompt_encoder.mask_downscaling.N`, `mask_decoder.output_upscaling.N`,\n\
         `norm1..4`, MLP `layers.N`, `pe_layer.positional_encoding_gaussian_matrix`).\n\n",
    );
    seg_table(s, seg::TINY_VIT_TENSORS);
    s.push_str(
        "\nShared: `{i}` runs over the decoder layers (`dec.blk`), the 4 point embeddings, the K\n\
         hypernetwork MLPs or the IoU head's middle layers. `ConvTranspose2d` weights [in, out, kh,\n\
         kw] are stored as [kh, kw, out, in] (ne [in, out, 2, 2]); the 1x1 neck convolution as a\n\
         matrix.\n\n",
    );
    seg_table(s, seg::HEAD_TENSORS);
}

fn seg_table(s: &mut String, groups: &[&[SegDef]]) {
    s.push_str("| GGUF name | checkpoint name | ne | stored as |\n|---|---|---|---|\n");
    for d in groups.iter().flat_map(|g| g.iter()) {
        s.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            d.row.gguf,
            d.row.hf,
            ne(d.row.shape, ssym),
            stored(d.row.kind)
        ));
    }
}

/// Marker lines around the generated section of gguf/README.md.
pub const BEGIN: &str = "<!-- BEGIN GENERATED (gguf/doc.rs; regenerate: DAM_BLESS=1 cargo test --release --lib convert::doc) -->";
pub const END: &str = "<!-- END GENERATED -->";

#[cfg(test)]
mod tests {
    use super::*;

    fn readme_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gguf/README.md")
    }

    #[test]
    fn readme_matches_the_tables() {
        let path = readme_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let want = format!("{BEGIN}\n{}{END}", render());
        let (a, b) = (text.find(BEGIN), text.find(END));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("gguf/README.md lacks the generated-section markers")
        };
        let current = &text[a..b + END.len()];
        if current == want {
            return;
        }
        if std::env::var("DAM_BLESS").is_ok_and(|v| v == "1") {
            let new = format!("{}{want}{}", &text[..a], &text[b + END.len()..]);
            std::fs::write(&path, new).unwrap();
            return;
        }
        panic!(
            "gguf/README.md's generated section is out of date; run\n  DAM_BLESS=1 cargo test --release --lib convert::doc\n"
        );
    }

    #[test]
    fn write_keys_writes_exactly_the_documented_vision_keys() {
        let hp = crate::weights::VisionHparams {
            image_size: 70,
            patch_size: 14,
            hidden: 48,
            hidden_in: 48,
            heads: 4,
            layers: 3,
            ff: 96,
            eps: 1e-6,
            act: "gelu_pytorch_tanh".into(),
            select_layer: -2,
            mask_channels: 1,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            ctx_type: "cross_attn_end_to_all".into(),
            ctx_layers: 3,
            ctx_heads: 4,
            ctx_ff: 96,
            ctx_eps: 1e-6,
            ctx_act: "gelu_pytorch_tanh".into(),
            ctx_masked: false,
            proj_type: "mlp_downsample".into(),
            proj_eps: 1e-5,
            llm_hidden: 64,
            conv_mode: "v1".into(),
            image_prefix: String::new(),
            video_prefix: "Video: ".into(),
            default_query: "q".into(),
            default_video_query: "v".into(),
            max_frames: 8,
        };
        let mut w = crate::sys::gguf::GgufWriter::with_capacity(1).unwrap();
        hp.write_keys(&mut w).unwrap();
        let path = std::env::temp_dir().join(format!("dam-doc-keys-{}.gguf", std::process::id()));
        w.begin(&path).unwrap().finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let h = crate::gguf_file::GgufHeader::parse(&bytes, "keys").unwrap();
        let written: Vec<&str> = h.keys.iter().map(|s| s.as_str()).collect();
        let documented: Vec<&str> = VISION_KEYS
            .iter()
            .map(|kd| kd.key)
            .filter(|k| *k != "general.name" && *k != WEIGHT_TYPE_KEY)
            .collect();
        assert_eq!(written, documented);
    }

    #[test]
    fn write_keys_writes_exactly_the_documented_segmenter_keys() {
        let vit = seg::EncoderHparams::Vit(seg::VitHparams {
            hidden: 8,
            heads: 2,
            layers: 2,
            ff: 16,
            eps: 1e-6,
            window: 2,
            global_layers: vec![1],
        });
        let tiny = seg::EncoderHparams::TinyVit(seg::TinyVitHparams {
            widths: vec![8, 16, 16, 24],
            depths: vec![1, 2, 1, 1],
            heads: vec![0, 2, 4, 3],
            windows: vec![0, 3, 2, 2],
            ff: vec![16, 32, 32, 48],
            local_conv: 3,
            eps: 1e-5,
        });
        for (encoder, keys) in [(vit, VIT_KEYS), (tiny, TINY_VIT_KEYS)] {
            check_segmenter_keys(encoder, keys);
        }
    }

    fn check_segmenter_keys(encoder: seg::EncoderHparams, encoder_keys: &[KeyDoc]) {
        let hp = seg::SegmenterHparams {
            image_size: 64,
            patch_size: 16,
            encoder,
            out: 8,
            mask_in: 4,
            dec_layers: 1,
            dec_heads: 2,
            dec_ff: 16,
            dec_eps: 1e-6,
            downsample: 2,
            multimask: 3,
            iou_depth: 3,
            iou_hidden: 8,
            longest_edge: 64,
            pixel_scale: seg::PixelScale::Byte,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        };
        let mut w = crate::sys::gguf::GgufWriter::with_capacity(1).unwrap();
        hp.write_keys(&mut w).unwrap();
        let path = std::env::temp_dir().join(format!(
            "dam-doc-skeys-{}-{}.gguf",
            hp.encoder_kind().name(),
            std::process::id()
        ));
        w.begin(&path).unwrap().finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let h = crate::gguf_file::GgufHeader::parse(&bytes, "keys").unwrap();
        let written: Vec<&str> = h.keys.iter().map(|s| s.as_str()).collect();
        let documented: Vec<&str> = SEGMENTER_KEYS
            .iter()
            .chain(encoder_keys)
            .map(|kd| kd.key)
            .filter(|k| *k != "general.name")
            .collect();
        assert_eq!(written, documented);
        assert_eq!(seg::SegmenterHparams::from_gguf(&h).unwrap(), hp);
    }

    #[test]
    fn every_key_is_documented_once_per_file() {
        let seg_vit = [SEGMENTER_KEYS, VIT_KEYS].concat();
        let seg_tiny = [SEGMENTER_KEYS, TINY_VIT_KEYS].concat();
        for keys in [VISION_KEYS, LLM_KEYS, &seg_vit, &seg_tiny] {
            let mut seen = std::collections::HashSet::new();
            for kd in keys {
                assert!(seen.insert(kd.key), "{} documented twice", kd.key);
            }
        }
    }
}
