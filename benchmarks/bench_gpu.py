"""GPU throughput: images/s end to end, by model, precision and window batch size.

For each architecture (``--archs``, default ViT-B-16 and ViT-L-14, random weights unless
``--checkpoint`` names a weights file; nothing is downloaded) on a CUDA device:

1. **text excluded**: :meth:`Segmenter.segment` of ``--images`` distinct random images with the
   class embeddings already cached, for precisions fp32, fp16 and bf16 (autocast; bf16 where the
   device supports it) and window batch sizes 1, 2, 4, ..., 64. The images are ``448 x 2576``
   (short side 448, 3 x 22 = 66 windows of 224 / 112), so every batch size up to 64 fills; the
   figures are windows/s, images/s of that size and ``448 x 448``-image equivalents/s (9
   windows each), plus each precision's speed-up over fp32 at the same batch size.
2. **text included**: the same run from a fresh Segmenter (no text cache): ``--classes``
   class names x 80 templates are encoded first (truncated text forward), then the images.
3. **fp16 / bf16 vs fp32 labels**: share of pixels whose label equals fp32's, overall and on
   the pixels where fp32's top-two probability margin is at least ``--margin`` (0.05). Stated
   tolerance: at least 99.9 % agreement on those pixels (``PASS``/``FAIL`` is printed; the
   script still exits 0: it measures, it does not gate). Random weights give nearly tied
   classes, so the overall figure is a lower bound of what trained weights give.

Out of memory: the Segmenter halves the window batch and says so (a ``RuntimeWarning``,
printed here as ``OOM: ...``); an OOM while encoding text halves the prompts per pass with
a message; a single window that does not fit is reported and the configuration skipped.

Without CUDA it says so, runs a tiny CPU smoke run of the same code path (tiny random model,
fp32 and bf16, batch sizes 1 and 2) and exits 0.

    .venv/bin/python benchmarks/bench_gpu.py [--archs ViT-B-16,ViT-L-14] [--images 4]
        [--batches 1,2,4,8,16,32,64] [--classes 20] [--device cuda:0] [--checkpoint FILE]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipseg.config import SegmentConfig
from clipseg.errors import ClipSegError
from clipseg.generators import drain
from clipseg.models import wrap_model
from clipseg.pipeline import Segmenter
from clipseg.results import SegmentationResult

CLASSES = ["sky", "tree", "grass", "road", "building", "car", "person", "dog", "cat", "water",
           "mountain", "sand", "snow", "boat", "bird", "horse", "flower", "wall", "fence",
           "bicycle", "chair", "table", "lamp", "book", "bottle", "cup", "plate", "window",
           "door", "floor"]
TOLERANCE = 0.999  # agreement on confident pixels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(arch: str, device: torch.device, precision: str, batch: int,
            short_side: int) -> SegmentConfig:
    return SegmentConfig().replace(model=arch, device=str(device), precision=precision,
                                   batch_size=batch, short_side=short_side, text_cache="none")


def _segment_all(seg: Segmenter, images: list[np.ndarray],
                 classes: str) -> list[SegmentationResult]:
    """Segment every image (the window cache cleared first, so each is a full pass)."""
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for image in images:
            seg.clear_cache()
            out.append(drain(seg.run(image, classes)))
    for warning in caught:
        if "out of memory" in str(warning.message):
            print(f"    OOM: {warning.message}")
    return out


def _timed_segment(seg: Segmenter, images: list[np.ndarray], classes: str,
                   device: torch.device) -> tuple[float, list[SegmentationResult]]:
    _sync(device)
    start = time.perf_counter()
    labels = _segment_all(seg, images, classes)
    _sync(device)
    return time.perf_counter() - start, labels


def _encode_text_halving(seg: Segmenter, classes: str) -> None:
    """Fill the text cache; on OOM halve the text batch and say so."""
    encoder = seg.text_encoder
    while True:
        try:
            encoder.encode(classes)
            return
        except torch.OutOfMemoryError:
            if encoder.batch_size == 1:
                raise
            torch.cuda.empty_cache()
            print(f"    OOM encoding text with {encoder.batch_size} prompts per pass; "
                  f"retrying with {encoder.batch_size // 2}")
            encoder.batch_size //= 2


def _agreement(ref: list[SegmentationResult], other: list[SegmentationResult],
               margin: float) -> tuple[float, float]:
    """(overall agreement, agreement where fp32's top-two probability margin >= margin)."""
    equal = np.concatenate([(a.labels == b.labels).ravel() for a, b in zip(ref, other)])
    confident = []
    for result in ref:
        top = np.sort(result.probs, axis=0)  # (K, H, W)
        confident.append((top[-1] - top[-2] >= margin).ravel())
    mask = np.concatenate(confident)
    return float(equal.mean()), float(equal[mask].mean()) if mask.any() else float("nan")


def _build(arch: str, checkpoint: str | None) -> torch.nn.Module:
    """open_clip ``arch`` with random weights (seed 0), or the weights of ``checkpoint``."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    if checkpoint:
        from clipseg.models import load_checkpoint_safely
        model.load_state_dict(load_checkpoint_safely(checkpoint))
    return model.eval()


def bench_arch(arch: str, model: torch.nn.Module, device: torch.device,
               args: argparse.Namespace, images: list[np.ndarray], short_side: int) -> None:
    loaded = wrap_model(model, name=arch, device=device)
    classes = ", ".join(CLASSES[:args.classes])
    windows = None
    precisions = ["fp32", "fp16"]
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        precisions.append("bf16")
    used = getattr(args, "checkpoint_used", None)
    weights = "random weights" if not used else used
    print(f"\n== {arch} ({weights}) on {device}, {len(images)} images "
          f"{images[0].shape[0]}x{images[0].shape[1]}, {args.classes} classes x 80 templates")
    results: dict[str, list[SegmentationResult]] = {}
    rates: dict[tuple[str, int], float] = {}
    print(f"  [1] text excluded   {'precision':>9} {'batch':>5} {'windows/s':>10} "
          f"{'images/s':>9} {'448px-eq/s':>10} {'vs fp32':>8}")
    for precision in precisions:
        for batch in args.batches:
            seg = Segmenter(_config(arch, device, precision, batch, short_side), model=loaded)
            try:
                _encode_text_halving(seg, classes)
                _segment_all(seg, images[:1], classes)  # warm-up (kernels, allocator)
                seconds, out = _timed_segment(seg, images, classes, device)
            except ClipSegError as exc:  # one window does not fit
                print(f"    {precision} batch {batch}: skipped ({exc})")
                continue
            if windows is None:
                # the last image's windows are cached: counting them runs no pass
                windows = len(drain(seg.window_embeddings(images[-1])).boxes)
            rate = len(images) / seconds
            rates[(precision, batch)] = rate
            base = rates.get(("fp32", batch))
            print(f"  {'':19} {precision:>9} {batch:>5} {rate * windows:10.1f} {rate:9.2f} "
                  f"{rate * windows / 9:10.1f} {rate / base if base else float('nan'):8.2f}")
            if batch == args.agree_batch:
                results[precision] = out
            del seg
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"  [2] text included (fresh Segmenter: {args.classes} x 80 prompts, then the images)")
    for precision in precisions:
        batch = args.agree_batch
        seg = Segmenter(_config(arch, device, precision, batch, short_side), model=loaded)
        _sync(device)
        start = time.perf_counter()
        _encode_text_halving(seg, classes)
        _sync(device)
        text = time.perf_counter() - start
        seconds, _ = _timed_segment(seg, images, classes, device)
        excluded = rates.get((precision, batch))
        total = text + seconds
        print(f"    {precision} batch {batch}: text {text:.2f} s + images {seconds:.2f} s -> "
              f"{len(images) / total:.2f} images/s"
              + (f" ({len(images) / total / excluded:.2f}x the text-excluded rate)"
                 if excluded else ""))
    if "fp32" in results:
        print(f"  [3] labels vs fp32 (batch {args.agree_batch}; tolerance: >= "
              f"{TOLERANCE:.1%} equal where fp32's top-two margin >= {args.margin})")
        for precision in precisions[1:]:
            if precision not in results:
                continue
            overall, confident = _agreement(results["fp32"], results[precision], args.margin)
            verdict = "PASS" if confident >= TOLERANCE else "FAIL"
            print(f"    {precision}: {overall:.4%} of pixels equal, {confident:.4%} of the "
                  f"confident ones -> {verdict}")


def _images(count: int, height: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):  # smooth blobs plus noise, so labels form regions
        small = rng.integers(0, 256, (max(1, height // 32), max(1, width // 32), 3))
        big = np.kron(small, np.ones((32, 32, 1)))[:height, :width]
        big = np.pad(big, ((0, height - big.shape[0]), (0, width - big.shape[1]), (0, 0)),
                     mode="edge")
        noise = rng.integers(-20, 21, (height, width, 3))
        out.append(np.clip(big + noise, 0, 255).astype(np.uint8))
    return out


def smoke(args: argparse.Namespace) -> None:
    """The same code path on the CPU with the tiny test model (a few seconds)."""
    from tests.tiny_models import TINY_NAME, make_tiny_clip

    args.batches, args.agree_batch, args.classes = [1, 2], 2, 3
    bench_arch(TINY_NAME, make_tiny_clip(), torch.device("cpu"), args, _images(2, 32, 96),
               short_side=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", default="ViT-B-16,ViT-L-14")
    parser.add_argument("--images", type=int, default=4, help="timed images per setting")
    parser.add_argument("--width", type=int, default=2576,
                        help="image width at height 448 (2576: 66 windows)")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--agree-batch", type=int, default=16,
                        help="batch size of the text-included and label-agreement parts")
    parser.add_argument("--classes", type=int, default=20, help=f"1..{len(CLASSES)}")
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--checkpoint", default=None,
                        help="weights file for the first architecture (else random weights)")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.classes = max(1, min(len(CLASSES), args.classes))
    if args.agree_batch not in args.batches:
        parser.error(f"--agree-batch {args.agree_batch}: expected one of --batches "
                     f"{args.batches}")
    print(f"torch {torch.__version__}")
    if not torch.cuda.is_available():
        print("no CUDA device available (torch.cuda.is_available() is False): the GPU figures "
              "need a machine with one. Running a tiny CPU smoke run of the same code path "
              "instead; its figures mean nothing.")
        smoke(args)
        print("smoke run done; exiting 0 without GPU figures")
        return
    device = torch.device(args.device)
    print(f"device {torch.cuda.get_device_name(device)}, "
          f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB")
    images = _images(args.images, 448, args.width)
    for i, arch in enumerate(a.strip() for a in args.archs.split(",") if a.strip()):
        model = _build(arch, args.checkpoint if i == 0 else None)
        args.checkpoint_used = args.checkpoint if i == 0 else None
        bench_arch(arch, model, device, args, images, short_side=448)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
