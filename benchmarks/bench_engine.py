"""Engine benchmark: cost of the dense readouts and of re-labelling, on CPU.

ViT-B/16 geometry with random weights (no download), a 448 x 448 image, 224 / 112 windows
(9 crops), ``torch.set_num_threads(2)`` by default. Prints, as medians over ``--repeat`` timed
rounds after one warm-up round:

1. for every readout: time of :class:`clipseg.features.DenseEncoder` over all crops divided by
   the time of open_clip's own ``model.encode_image`` over the same crops (one batch). Target
   for ``clipseg``: <= 1.2. Readouts and the reference are timed round-robin inside each round
   so that load from other processes affects them alike.
2. re-labelling: :meth:`Segmenter.relabel` with a new 20-class list from the cached window
   embeddings, divided by a full :meth:`Segmenter.run` (window pass + labels) of the same image.
   Target: < 0.05. Text embeddings are cached for both (their cost depends only on the number of
   prompts and is printed separately, with its own ratio).
3. text: :class:`clipseg.text.TextEncoder` over ``--text-classes`` class names x 80 templates
   (ViT-B-16's text tower): the exact truncated forward divided by open_clip's ``encode_text``
   (``truncate=False``), and a fresh encoder reading the on-disk cache divided by the same
   (plus the one-time digest of the text weights), with the largest difference of the
   embeddings.

``--flops`` adds 1b: the matrix-product FLOPs of each readout over those of ``encode_image``
(torch.profiler), a figure that does not move with the machine's load.

It prints figures and asserts nothing. ``--clock cpu`` times with the process CPU clock
instead of the wall clock (steadier on a machine shared with other processes; use it with
``--threads 1``). Run from the repository root::

    .venv/bin/python benchmarks/bench_engine.py [--repeat 3] [--threads 2] [--templates 1]
        [--only readouts|relabel|text] [--methods clipseg,maskclip] [--clock wall|cpu]
        [--stat median|min] [--flops]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import open_clip
import torch

from clipseg.config import READOUTS, ReadoutConfig, SegmentConfig
from clipseg.features import DenseEncoder
from clipseg.image import to_pixels
from clipseg.models import wrap_model
from clipseg.models.text_tower import text_weights_digest
from clipseg.pipeline import Segmenter
from clipseg.text import TextEncoder, parse_classes
from clipseg.text_cache import TextCache
from clipseg.tiling import window_boxes

CLASSES_A = ("sky, tree, grass, road, building, car, person, dog, cat, water, mountain, "
             "sand, snow, boat, bird, horse, flower, wall, fence, bicycle")
CLASSES_B = ("ceiling, floor, table, chair, sofa, bed, window, door, lamp, book, bottle, cup, "
             "plate, keyboard, screen, curtain, carpet, shelf, plant, clock")


CLOCK = time.perf_counter
STAT = statistics.median


def _timed(fn: Callable[[], object]) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def _median_round_robin(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Warm each function up once, then time them in turn ``repeat`` times; medians."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    return {name: STAT(values) for name, values in times.items()}


def bench_readouts(model: torch.nn.Module, crops: torch.Tensor, repeat: int,
                   methods: tuple[str, ...] = READOUTS) -> None:
    print(f"\n[1] dense readout over {crops.shape[0]} crops of {crops.shape[-1]} px "
          f"vs model.encode_image ({STAT.__name__} of {repeat})")
    fns: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        fns["encode_image"] = lambda: model.encode_image(crops)
        for method in methods:
            encoder = DenseEncoder(model, ReadoutConfig(method=method), middle_layer=6)
            fns[method] = (lambda enc=encoder: enc(crops))
        medians = _median_round_robin(fns, repeat)
    base = medians["encode_image"]
    print(f"  {'encode_image':<14} {base * 1000:9.1f} ms   1.00")
    for method in methods:
        ratio = medians[method] / base
        note = "   (target <= 1.05)" if method == "clipseg" else ""
        print(f"  {method:<14} {medians[method] * 1000:9.1f} ms   {ratio:.3f}{note}")


def bench_flops(model: torch.nn.Module, crops: torch.Tensor,
                methods: tuple[str, ...] = READOUTS) -> None:
    """Matrix-product FLOPs (torch.profiler ``with_flops``) of each readout / encode_image.

    Deterministic, so it shows what the code asks of the CPU whatever the machine's load;
    elementwise work (softmax, GELU, layer norms, DBSCAN) is not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    def count(fn: Callable[[], object]) -> float:
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            fn()
        return float(sum(event.flops for event in prof.key_averages()))

    print(f"\n[1b] matrix-product FLOPs over {crops.shape[0]} crops vs model.encode_image")
    with torch.no_grad():
        base = count(lambda: model.encode_image(crops))
        print(f"  {'encode_image':<14} {base / 1e9:9.1f} GFLOP   1.000")
        for method in methods:
            encoder = DenseEncoder(model, ReadoutConfig(method=method), middle_layer=6)
            flops = count(lambda enc=encoder: enc(crops))
            print(f"  {method:<14} {flops / 1e9:9.1f} GFLOP   {flops / base:.3f}")


def bench_relabel(model: torch.nn.Module, image: np.ndarray, repeat: int,
                  templates: tuple[str, ...]) -> None:
    print(f"\n[2] relabel with a new 20-class list vs a full run ({STAT.__name__} of {repeat})")
    loaded = wrap_model(model, name="ViT-B-16")
    config = SegmentConfig().replace(model="ViT-B-16", device="cpu", precision="fp32",
                                     short_side=448, crop=224, stride=112, batch_size=9,
                                     text_cache="none")
    seg = Segmenter(config, model=loaded, templates=templates)
    text_a = _timed(lambda: seg.text_encoder.encode(CLASSES_A))   # fills the text cache
    seg.text_encoder.encode(CLASSES_B)

    def full_run() -> None:
        seg.clear_cache()
        seg.segment(image, CLASSES_A)

    def relabel() -> None:
        seg.relabel(CLASSES_B)

    full_run()  # warm-up, and the cache relabel reads
    relabel()
    full_times, relabel_times = [], []
    for _ in range(repeat):
        full_times.append(_timed(full_run))
        relabel_times.append(_timed(relabel))
    full, rel = STAT(full_times), STAT(relabel_times)
    print(f"  full run (text cached)     {full * 1000:9.1f} ms")
    print(f"  relabel  (text cached)     {rel * 1000:9.1f} ms   ratio {rel / full:.4f} "
          "(target < 0.05)")
    prompts = 20 * len(templates)
    print(f"  text, 20 classes x {len(templates)} template(s) = {prompts} prompts: "
          f"{text_a * 1000:.1f} ms (first encoding; cached afterwards)")
    print(f"  with that text cost on both sides: relabel / full run = "
          f"{(rel + text_a) / (full + text_a):.4f}")


def bench_text(model: torch.nn.Module, repeat: int, classes: int) -> None:
    names = [n.strip() for n in CLASSES_A.split(",")][:classes]
    specs = parse_classes(names)
    print(f"\n[3] text: {len(names)} classes x 80 templates = {80 * len(names)} prompts, "
          f"ViT-B-16 text tower ({STAT.__name__} of {repeat})")
    loaded = wrap_model(model, name="ViT-B-16")
    folder = tempfile.mkdtemp(prefix="clipseg-bench-text-")
    results: dict[str, torch.Tensor] = {}

    def run(name: str, **kwargs: object) -> Callable[[], object]:
        def go() -> None:
            results[name] = TextEncoder(loaded, **kwargs).encode(specs)[0]
        return go

    digest = _timed(lambda: text_weights_digest(model))  # once per model object
    run("fill", disk_cache=TextCache(folder))()           # what a first run leaves on disk
    fns = {"encode_text": run("encode_text", truncate=False),
           "truncated": run("truncated"),
           "disk cache": run("disk cache", disk_cache=TextCache(folder))}
    medians = _median_round_robin(fns, repeat)
    base = medians["encode_text"]
    diff = float((results["truncated"] - results["encode_text"]).abs().max())
    print(f"  {'encode_text':<26} {base * 1000:9.1f} ms   1.00")
    print(f"  {'truncated (exact)':<26} {medians['truncated'] * 1000:9.1f} ms   "
          f"{medians['truncated'] / base:.3f}   max |diff| {diff:.1e}")
    print(f"  {'disk cache, new encoder':<26} {medians['disk cache'] * 1000:9.1f} ms   "
          f"{medians['disk cache'] / base:.4f}   "
          f"vs truncated {medians['disk cache'] / medians['truncated']:.4f}")
    print(f"  {'weights digest (once)':<26} {digest * 1000:9.1f} ms   {digest / base:.3f}")


def main() -> None:
    global CLOCK, STAT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--templates", type=int, default=1,
                        help="prompt templates per class for the relabel part (1..80; 80 = "
                             "open_clip's ImageNet set, slow on CPU)")
    parser.add_argument("--only", choices=("readouts", "relabel", "text"), default=None,
                        help="run one part only")
    parser.add_argument("--methods", default=",".join(READOUTS),
                        help="readouts to time in part 1, comma-separated")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock, or this process's CPU time (steadier under load)")
    parser.add_argument("--flops", action="store_true",
                        help="also count matrix-product FLOPs per readout (part 1b)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="statistic of the timed rounds (min: least disturbed by load)")
    parser.add_argument("--text-classes", type=int, default=3,
                        help="class names of part 3 (x 80 templates)")
    args = parser.parse_args()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(READOUTS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; expected some of "
                     f"{', '.join(READOUTS)}")
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    STAT = min if args.stat == "min" else statistics.median
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    templates = tuple(open_clip.OPENAI_IMAGENET_TEMPLATES[:max(1, min(80, args.templates))])

    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    loaded = wrap_model(model, name="ViT-B-16")
    image = np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    boxes = window_boxes(448, 448, 224, 112)
    crops = torch.cat([to_pixels(image[y0:y1, x0:x1], loaded.mean, loaded.std, "cpu")
                       for y0, x0, y1, x1 in boxes])
    print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, "
          f"{torch.get_num_threads()} threads, ViT-B-16 random weights, image 448x448, "
          f"{len(boxes)} windows 224/112, {args.clock} clock, {args.stat} of the rounds")
    if args.only in (None, "readouts"):
        bench_readouts(model, crops, args.repeat, methods)
        if args.flops:
            bench_flops(model, crops, methods)
    if args.only in (None, "relabel"):
        bench_relabel(model, image, args.repeat, templates)
    if args.only in (None, "text"):
        bench_text(model, args.repeat, args.text_classes)


if __name__ == "__main__":
    main()
