#!/usr/bin/env python3
"""The official PyTorch segmenters, timed stage by stage as `dam bench --segmenter-only`.

Two models, each run by the code its users run:

  sam-vit-b  transformers' `SamModel` (the default `SamConfig` is SAM ViT-B) with the
             `SamProcessor` (PIL image processor, as transformers 4.x's that the DAM
             reference's examples/dam_with_sam.py uses), `post_process_masks`.
  mobilesam  MobileSAM's own code (`mobile_sam`, PyPI `mobilesam-mirror`):
             `build_sam_vit_t` and its `SamPredictor` (`set_image`, `predict`).

Modes:

  make   Writes a checkpoint of the real size with seeded random weights, in the
         format `dam convert` reads (a SamModel folder; MobileSAM's state dict as
         model.safetensors, the form `mobile_sam.pt` is converted to):
           benches/torch_segmenter.py make --model sam-vit-b --out DIR
           dam convert DIR --outdir OUT --type f32
  bench  Times, on one image and prompt (clicks "x,y;x,y" with labels, and/or a box):
           preprocess_ms   the image into the encoder's input
           encode_ms       the image encoder
           decode_ms       prompt encoder + mask decoder (low-resolution masks, IoU)
           first_click_ms  all of it with the masks upscaled to the image
           reclick_ms      a second prompt on the same image: decoder + upscaling,
                           the embedding reused (SamModel(image_embeddings=...);
                           SamPredictor.predict after set_image)
         Prints one JSON line (the field names of `dam bench --segmenter-only`):
           benches/torch_segmenter.py bench --model mobilesam --ckpt DIR -i IMG \\
               [--points X,Y] [--labels 1] [--box X0,Y0,X1,Y1] --threads 2 --runs 3 --warmup 1

Environment: the fixture generators' (tests/fixtures/gen_segmenter.py): torch,
transformers, safetensors, pillow, numpy, mobilesam-mirror.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image


def ms(t):
    return (time.perf_counter() - t) * 1e3


def make(args):
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    if args.model == "sam-vit-b":
        from transformers import SamConfig, SamModel, SamProcessor
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

        model = SamModel(SamConfig()).eval()
        model.save_pretrained(args.out, safe_serialization=True)
        SamProcessor(image_processor=SamImageProcessorPil()).save_pretrained(args.out)
    else:
        from mobile_sam import build_sam_vit_t
        from safetensors.torch import save_file

        sam = build_sam_vit_t().eval()
        # Re-draw BatchNorm statistics, so folding them is not an identity.
        g = torch.Generator().manual_seed(args.seed)
        for m in sam.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        sd = {k: v.contiguous() for k, v in sam.state_dict().items()}
        save_file(sd, os.path.join(args.out, "model.safetensors"))
        with open(os.path.join(args.out, "mobilesam.json"), "w") as f:
            json.dump({"image_size": 1024}, f)
    n = sum(p.numel() for p in (model if args.model == "sam-vit-b" else sam).parameters())
    print(json.dumps({"model": args.model, "out": args.out, "parameters": n}))


def record(runs, kept, preprocess_ms, encode_ms, decode_ms, first_click_ms, reclick_ms, iou, mask):
    """Appends one measured run (not a warm-up's) with its result."""
    iou = [float(v) for v in np.asarray(iou).reshape(-1)]
    run = dict(preprocess_ms=preprocess_ms, encode_ms=encode_ms, decode_ms=decode_ms,
               first_click_ms=first_click_ms, reclick_ms=reclick_ms,
               best_index=int(np.argmax(iou)), iou_scores=iou, mask_pixels=int(mask.sum()))
    if kept:
        runs.append(run)
    print(f"run: {run if kept else 'warm-up'}", file=sys.stderr)


def prompt_of(args, w, h):
    pts = [[float(v) for v in p.split(",")] for p in args.points.split(";")] if args.points else []
    labels = [int(v) for v in args.labels.split(",")] if args.labels else [1] * len(pts)
    box = [float(v) for v in args.box.split(",")] if args.box else None
    if not pts and box is None:
        pts, labels = [[w / 2, h / 2]], [1]
    return pts, labels, box


def bench_sam(args, image, pts, labels, box):
    from transformers import SamModel, SamProcessor

    t = time.perf_counter()
    model = SamModel.from_pretrained(args.ckpt).eval()
    processor = SamProcessor.from_pretrained(args.ckpt)
    load_ms = ms(t)
    kw = {}
    if pts:
        kw["input_points"] = [[pts]]
        kw["input_labels"] = [[labels]]
    if box is not None:
        kw["input_boxes"] = [[box]]

    def decode(emb, inputs):
        return model(
            image_embeddings=emb,
            input_points=inputs.get("input_points"),
            input_labels=inputs.get("input_labels"),
            input_boxes=inputs.get("input_boxes"),
            multimask_output=True,
        )

    def upscale(out, inputs):
        masks = processor.image_processor.post_process_masks(
            out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0][0]
        iou = out.iou_scores[0, 0]
        return int(torch.argmax(iou)), masks, iou

    runs = []
    with torch.inference_mode():
        for k in range(args.warmup + args.runs):
            t = time.perf_counter()
            inputs = processor(images=image, return_tensors="pt", **kw)
            preprocess_ms = ms(t)
            t = time.perf_counter()
            emb = model.get_image_embeddings(inputs["pixel_values"])
            encode_ms = ms(t)
            t = time.perf_counter()
            decode(emb, inputs)
            decode_ms = ms(t)
            # The whole first click, as the reference's example runs it.
            t = time.perf_counter()
            inputs = processor(images=image, return_tensors="pt", **kw)
            emb = model.get_image_embeddings(inputs["pixel_values"])
            best, masks, iou = upscale(decode(emb, inputs), inputs)
            first_click_ms = ms(t)
            t = time.perf_counter()
            upscale(decode(emb, inputs), inputs)
            reclick_ms = ms(t)
            record(runs, k >= args.warmup, preprocess_ms, encode_ms, decode_ms, first_click_ms,
                   reclick_ms, iou, masks[best])
    return load_ms, runs


def bench_mobilesam(args, image, pts, labels, box):
    from mobile_sam import SamPredictor, build_sam_vit_t
    from safetensors.torch import load_file

    t = time.perf_counter()
    sam = build_sam_vit_t().eval()
    sam.load_state_dict(load_file(os.path.join(args.ckpt, "model.safetensors")))
    predictor = SamPredictor(sam)
    load_ms = ms(t)
    rgb = np.asarray(image)
    kw = dict(multimask_output=True)
    if pts:
        kw["point_coords"] = np.array(pts, dtype=np.float32)
        kw["point_labels"] = np.array(labels, dtype=np.int64)
    if box is not None:
        kw["box"] = np.array(box, dtype=np.float32)
    runs = []
    with torch.inference_mode():
        for k in range(args.warmup + args.runs):
            # set_image's two halves: its transform and normalisation, the encoder.
            t = time.perf_counter()
            x = predictor.transform.apply_image(rgb)
            x = torch.as_tensor(x).permute(2, 0, 1).contiguous()[None, :, :, :]
            x = sam.preprocess(x)
            preprocess_ms = ms(t)
            t = time.perf_counter()
            sam.image_encoder(x)
            encode_ms = ms(t)
            predictor.set_image(rgb)
            t = time.perf_counter()
            # The decoder alone: predict()'s prompt transform, prompt encoder and
            # mask decoder, without its upscaling to the image.
            size = predictor.original_size
            points = None
            if pts:
                coords = predictor.transform.apply_coords(kw["point_coords"], size)
                points = (torch.as_tensor(coords)[None], torch.as_tensor(kw["point_labels"])[None])
            bx = None
            if box is not None:
                bx = torch.as_tensor(predictor.transform.apply_boxes(kw["box"], size))
            sparse, dense = sam.prompt_encoder(points=points, boxes=bx, masks=None)
            sam.mask_decoder(
                image_embeddings=predictor.features,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            decode_ms = ms(t)
            t = time.perf_counter()
            predictor.set_image(rgb)
            masks, iou, _ = predictor.predict(**kw)
            first_click_ms = ms(t)
            t = time.perf_counter()
            predictor.predict(**kw)
            reclick_ms = ms(t)
            best = int(np.argmax(iou))
            record(runs, k >= args.warmup, preprocess_ms, encode_ms, decode_ms, first_click_ms,
                   reclick_ms, iou, masks[best])
    return load_ms, runs


def bench(args):
    torch.set_num_threads(args.threads)
    image = Image.open(args.image).convert("RGB")
    w, h = image.size
    pts, labels, box = prompt_of(args, w, h)
    run = bench_sam if args.model == "sam-vit-b" else bench_mobilesam
    load_ms, runs = run(args, image, pts, labels, box)
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("preprocess_ms", "encode_ms", "decode_ms", "first_click_ms", "reclick_ms")}
    print(json.dumps({"model": args.model, "torch_version": torch.__version__,
                      "threads": args.threads, "width": w, "height": h, "load_ms": load_ms,
                      "runs": runs, "median": med}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("make")
    m.add_argument("--model", choices=["sam-vit-b", "mobilesam"], required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench")
    b.add_argument("--model", choices=["sam-vit-b", "mobilesam"], required=True)
    b.add_argument("--ckpt", required=True)
    b.add_argument("-i", "--image", required=True)
    b.add_argument("--points")
    b.add_argument("--labels")
    b.add_argument("--box")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    make(args) if args.mode == "make" else bench(args)


if __name__ == "__main__":
    main()
