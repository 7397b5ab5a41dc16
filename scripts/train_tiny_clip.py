"""Train the bundled demo CLIP on synthetic scenes, on CPU, deterministically.

Usage (from the repository root)::

    .venv/bin/python scripts/train_tiny_clip.py              # 300 steps of 128 scenes, seed 0

The shipped weights took 571 s of training on 2 CPU cores (shared with another job for the
first half).

What it does, printed as it goes:

1. cuts CLIP's BPE vocabulary down to the merges that the prompts and captions use (the
   48894-merge table would make the token embedding 49408 rows, almost all of the weights) and
   writes it with the architecture ``clipseg-demo-tiny.json`` into ``--out``; registers that
   config with open_clip (``open_clip.add_model_config``) and builds the model with random
   weights from ``--seed``;
2. for each step draws ``--batch`` fresh 64x64 scenes from :mod:`clipseg.apps.synthetic`
   (generator seeded with ``[seed, step]``; the held-out scenes of the tests and the demo use
   integer seeds from 1_000_000 on, which never give the same stream) and one caption per
   scene: half of them a class name of the scene through a random one of open_clip's 80
   ImageNet templates (the prompts the segmentation queries with), half a composed sentence
   ("a red circle and a blue square on stripes");
3. optimises open_clip's own contrastive loss ``open_clip.ClipLoss`` with AdamW (linear warm-up,
   cosine decay), ``torch.use_deterministic_algorithms(True)`` and a fixed thread count;
4. reports zero-shot accuracy on held-out single-shape scenes and writes the whole state dict
   as fp16 ``clipseg-demo-tiny.safetensors`` (training facts in its metadata). The package loads
   it like any user checkpoint (:mod:`clipseg.models.bundled`).

The same seed, step count and thread count give the same weights on the same torch build.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

from clipseg.apps import synthetic

ARCH = "clipseg-demo-tiny"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "src" / "clipseg" / "weights"
#: The architecture; ``vocab_size`` and ``tokenizer_kwargs`` are filled in by
#: :func:`write_tokenizer` (the vocabulary is cut down to what the captions use).
ARCH_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 6, "width": 128, "patch_size": 8,
                   "head_width": 32},
    "text_cfg": {"context_length": 32, "width": 64, "heads": 4, "layers": 2},
}


def corpus() -> list[str]:
    """Every text the model is trained or queried with: the 80 templates on each class name,
    and the words of the composed captions."""
    texts = [t(name) for name in synthetic.CLASS_NAMES
             for t in open_clip.OPENAI_IMAGENET_TEMPLATES]
    texts.append("a and on " + " ".join(synthetic.CLASS_NAMES))
    return texts


def needed_merges(texts: list[str]) -> list[tuple[str, str]]:
    """The CLIP BPE merges (in their original rank order) that tokenising ``texts`` applies.

    BPE merges the lowest-ranked pair present at each step, so keeping exactly the merges it
    applied (in the same order) reproduces the same tokens for these texts; any other word
    still tokenises, into smaller pieces (every byte stays in the vocabulary).
    """
    reference = open_clip.tokenizer.SimpleTokenizer()
    ranks = reference.bpe_ranks
    used: set[tuple[str, str]] = set()
    for text in texts:
        for piece in reference.pat.findall(reference.clean_fn(text)):
            word = "".join(reference.byte_encoder[b] for b in piece.encode("utf-8"))
            symbols = list(word[:-1]) + [word[-1] + "</w>"]
            while len(symbols) > 1:
                pairs = {(a, b) for a, b in zip(symbols[:-1], symbols[1:])}
                best = min(pairs, key=lambda pair: ranks.get(pair, math.inf))
                if best not in ranks:
                    break
                used.add(best)
                merged, i = [], 0
                while i < len(symbols):
                    if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                        merged.append(symbols[i] + symbols[i + 1])
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
    return sorted(used, key=ranks.__getitem__)


def write_tokenizer(out: Path) -> dict:
    """Write the cut-down BPE merges file and the architecture JSON into ``out``.

    Returns the architecture config (as written) for ``open_clip.add_model_config``.
    """
    merges = needed_merges(corpus())
    bpe_name = f"{ARCH}-bpe.txt.gz"
    with gzip.GzipFile(out / bpe_name, "wb", mtime=0) as fh:  # mtime=0: byte-identical reruns
        fh.write(("#version: 0.2 (cut down from the CLIP vocabulary by "
                  "scripts/train_tiny_clip.py)\n" + "\n".join(f"{a} {b}" for a, b in merges)
                  ).encode("utf-8"))  # no final newline: open_clip would read an empty merge
    config = json.loads(json.dumps(ARCH_CONFIG))
    # 256 bytes + 256 end-of-word bytes + merges + start/end of text
    config["text_cfg"]["vocab_size"] = 512 + len(merges) + 2
    config["text_cfg"]["tokenizer_kwargs"] = {"bpe_path": bpe_name}
    (out / f"{ARCH}.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"vocabulary: {len(merges)} merges kept, vocab_size "
          f"{config['text_cfg']['vocab_size']} (CLIP: 49408) -> {out / bpe_name}")
    return config


def register(out: Path, config: dict) -> None:
    """Register the architecture with open_clip, the BPE path made absolute."""
    resolved = json.loads(json.dumps(config))
    resolved["text_cfg"]["tokenizer_kwargs"]["bpe_path"] = str(out / f"{ARCH}-bpe.txt.gz")
    folder = Path(tempfile.mkdtemp(prefix="clipseg-train-"))
    (folder / f"{ARCH}.json").write_text(json.dumps(resolved))
    open_clip.add_model_config(folder / f"{ARCH}.json")


def batch(step: int, seed: int, size: int, tokenizer, mean: torch.Tensor, std: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One training batch: pixels (B, 3, S, S) normalised, tokens (B, C), captions."""
    rng = np.random.default_rng([seed, step])
    scenes = [synthetic.make_scene(rng, (64, 64)) for _ in range(size)]
    captions = []
    for scene in scenes:
        if rng.random() < 0.5:
            names = scene.present
            name = names[int(rng.integers(len(names)))]
            template = open_clip.OPENAI_IMAGENET_TEMPLATES[
                int(rng.integers(len(open_clip.OPENAI_IMAGENET_TEMPLATES)))]
            captions.append(template(name))
        else:
            captions.append(synthetic.caption(scene, rng))
    pixels = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    pixels = (pixels - mean) / std
    return pixels, tokenizer(captions), captions


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, mean, std, count: int = 200) -> float:
    """Top-1 accuracy of naming the single shape of held-out 64x64 scenes among the 12 shapes."""
    model.eval()
    templates = open_clip.OPENAI_IMAGENET_TEMPLATES
    text = []
    for name in synthetic.SHAPE_CLASSES:
        emb = model.encode_text(tokenizer([t(name) for t in templates]), normalize=True)
        text.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
    text = torch.stack(text)
    scenes = [synthetic.make_scene(10_000_000 + i, (64, 64), n_shapes=(1, 1))
              for i in range(count)]
    scenes = [s for s in scenes if len(s.shapes) == 1]
    pixels = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
    pixels = (pixels - mean) / std
    pred = (model.encode_image(pixels, normalize=True) @ text.T).argmax(-1)
    truth = torch.tensor([synthetic.SHAPE_CLASSES.index(s.shapes[0]) for s in scenes])
    model.train()
    return float((pred == truth).float().mean())


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write the whole state dict as fp16 safetensors with ``metadata`` (training facts)."""
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    path.chmod(0o644)  # safetensors writes 0600; the file ships in the package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=25)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR,
                        help="folder receiving the architecture JSON, BPE file and weights")
    parser.add_argument("--full-checkpoint", type=Path, default=None,
                        help="also save the full fp32 state dict here (torch.save)")
    parser.add_argument("--save-every", type=int, default=0,
                        help="also write the weights every N steps (0: only at the end)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    config = write_tokenizer(args.out)
    register(args.out, config)
    print(f"architecture {ARCH}: {json.dumps(config)}")
    model = open_clip.create_model(ARCH, pretrained=None)
    tokenizer = open_clip.get_tokenizer(ARCH)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters; seed {args.seed}; {args.threads} threads; "
          f"{args.steps} steps of batch {args.batch}; lr {args.lr}")
    mean = torch.tensor(model.visual.preprocess_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"]).view(1, 3, 1, 1)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                               {"params": rest, "weight_decay": 0.0}], lr=args.lr)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * t))

    path = args.out / f"{ARCH}.safetensors"
    facts = {"steps": str(args.steps), "batch": str(args.batch), "seed": str(args.seed),
             "lr": str(args.lr), "threads": str(args.threads), "torch": torch.__version__,
             "open_clip": open_clip.__version__}
    loss_fn = open_clip.ClipLoss()
    model.train()
    start = time.time()
    recent: list[float] = []
    for step in range(args.steps):
        pixels, tokens, captions = batch(step, args.seed, args.batch, tokenizer, mean, std)
        for group in optim.param_groups:
            group["lr"] = lr_at(step)
        image_features, text_features, logit_scale = model(pixels, tokens)
        loss = loss_fn(image_features, text_features, logit_scale)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        recent = (recent + [loss.item()])[-20:]
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  (mean of last {len(recent)}: "
                  f"{np.mean(recent):.4f})  scale {logit_scale.item():.1f}  "
                  f"lr {lr_at(step):.2e}  {time.time() - start:.0f} s  e.g. {captions[0]!r}",
                  flush=True)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save_weights(model, path, {**facts, "partial_after_steps": str(step + 1)})
            print(f"  (weights after {step + 1} steps -> {path})", flush=True)
    elapsed = time.time() - start
    accuracy = zero_shot_accuracy(model, tokenizer, mean, std)
    print(f"trained in {elapsed:.0f} s; final loss (mean of last {len(recent)} steps) "
          f"{np.mean(recent):.4f}; held-out zero-shot shape accuracy {accuracy:.3f} "
          f"(chance {1 / len(synthetic.SHAPE_CLASSES):.3f})")

    model.eval()
    if args.full_checkpoint is not None:
        torch.save(model.state_dict(), args.full_checkpoint)
        print(f"full fp32 state dict -> {args.full_checkpoint}")
    save_weights(model, path, {**facts, "final_loss": f"{np.mean(recent):.4f}",
                               "train_seconds": f"{elapsed:.0f}",
                               "zero_shot_accuracy": f"{accuracy:.3f}"})
    print(f"fp16 weights -> {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
