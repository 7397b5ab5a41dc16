"""Domain CLIPs in the registry: biomedical, microscopy, organisms, remote sensing.

Two kinds of weights source:

- ``hf-hub:`` models (BiomedCLIP, QuiltNet, BioCLIP): open_clip loads the architecture config
  and the weights from the Hugging Face repo itself; the entry's ``arch`` is that name.
- state-dict checkpoints (RemoteCLIP, GeoRSCLIP, SkyCLIP): plain weights files for a standard
  open_clip architecture. ``hub_file`` names the Hugging Face repo and file when the authors
  publish it there (fetched into the Hugging Face cache like open_clip's own weights);
  otherwise ``download`` says where to get it and the user passes ``checkpoint=PATH``. Loading
  is weights-only and strict (:func:`clipseg.models.checkpoint.load_checkpoint_safely`).

Middle layers are the paper's defaults (6 for 12-block ViT-B, 9 for ViT-L, Fig. 3 of CLIPSeg
for OpenAI's CLIP-L), not measured on these weights: calibrate them on a few labelled images of
your own (``clipseg calibrate``). The architecture is the one the authors' own loading code
builds (QuickGELU where it applies the OpenAI tag).
"""
from __future__ import annotations

from .registry import DEFAULT_LOGIT_SCALE, DEFAULT_SHORT_SIDE, ModelEntry

__all__ = ["CATALOG_ENTRIES", "CATALOG_ALIASES", "B32_NOTE"]

_B_SOURCE = "default for 12-block ViT-B, not measured on these weights; calibrate"
_L_SOURCE = ("paper Fig. 3 value for OpenAI CLIP ViT-L (these weights are fine-tuned from "
             "it), not measured on them; calibrate")

#: Shown with every ViT-B/32 entry.
B32_NOTE = ("ViT-B/32: 32-px patches make a 224-px window a 7x7 grid, so maps are coarse. The "
            "default stride is 56 (not 112): it is not a multiple of 32, so overlapping windows "
            "sample the image on an 8-px phase grid and their average is finer; a B/32 window "
            "costs about a quarter of a B/16 one, so the run costs about the same. A larger "
            "--short-side gives finer maps at a higher cost.")


def _entry(key: str, arch: str, *, layers_b: bool, patch: int, domain: str, description: str,
           source: str, hub_file: tuple[str, str] | None = None, download: str = "",
           requires: tuple[str, ...] = (), note: str = "") -> ModelEntry:
    return ModelEntry(
        key=key, arch=arch, pretrained=None,
        middle_layer=6 if layers_b else 9,
        middle_layer_source=_B_SOURCE if layers_b else _L_SOURCE,
        crop=224, stride=56 if patch == 32 else 112, short_side=DEFAULT_SHORT_SIDE,
        logit_scale=DEFAULT_LOGIT_SCALE, description=description, domain=domain,
        source=source, note=B32_NOTE if patch == 32 else note, hub_file=hub_file,
        download=download, requires=requires)


_SKYCLIP_URL = ("https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ckpt/"
                "SkyCLIP_ViT_L14_top30pct_filtered_by_CLIP_laion_RS.zip")

CATALOG_ENTRIES: list[ModelEntry] = [
    _entry("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
           "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
           layers_b=True, patch=16, domain="biomedical",
           description="BiomedCLIP: timm ViT-B/16 + PubMedBERT, 15M PubMed Central figure-caption "
                       "pairs (microscopy, radiology, histology, ...)",
           source="Zhang et al., BiomedCLIP, NEJM AI 2024; https://huggingface.co/"
                  "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
           requires=("transformers",),
           note="Its text tower is a Hugging Face BERT (PubMedBERT): it needs the transformers "
                "package (pip install 'napari-clipseg[biomed]'), and open_clip fetches the "
                "BERT's tokenizer and config from the Hugging Face Hub on first use."),
    _entry("hf-hub:wisdomik/QuiltNet-B-32", "hf-hub:wisdomik/QuiltNet-B-32",
           layers_b=True, patch=32, domain="microscopy",
           description="QuiltNet ViT-B/32: CLIP fine-tuned on Quilt-1M histopathology "
                       "image-text pairs",
           source="Ikezogwo et al., Quilt-1M, NeurIPS 2023 Datasets and Benchmarks; "
                  "https://huggingface.co/wisdomik/QuiltNet-B-32"),
    _entry("hf-hub:wisdomik/QuiltNet-B-16", "hf-hub:wisdomik/QuiltNet-B-16",
           layers_b=True, patch=16, domain="microscopy",
           description="QuiltNet ViT-B/16: CLIP fine-tuned on Quilt-1M histopathology "
                       "image-text pairs",
           source="Ikezogwo et al., Quilt-1M, NeurIPS 2023 Datasets and Benchmarks; "
                  "https://huggingface.co/wisdomik/QuiltNet-B-16"),
    _entry("hf-hub:imageomics/bioclip", "hf-hub:imageomics/bioclip",
           layers_b=True, patch=16, domain="organisms",
           description="BioCLIP ViT-B/16: CLIP trained on TreeOfLife-10M (organism photos, "
                       "450k taxa)",
           source="Stevens et al., BioCLIP, CVPR 2024; https://huggingface.co/imageomics/bioclip"),
    _entry("RemoteCLIP-ViT-B-32", "ViT-B-32", layers_b=True, patch=32, domain="remote sensing",
           description="RemoteCLIP ViT-B/32: CLIP continually pretrained on remote-sensing "
                       "image-text data",
           source="Liu et al., RemoteCLIP, IEEE TGRS 2024; "
                  "https://huggingface.co/chendelong/RemoteCLIP",
           hub_file=("chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt")),
    _entry("RemoteCLIP-ViT-L-14", "ViT-L-14", layers_b=False, patch=14, domain="remote sensing",
           description="RemoteCLIP ViT-L/14: CLIP continually pretrained on remote-sensing "
                       "image-text data",
           source="Liu et al., RemoteCLIP, IEEE TGRS 2024; "
                  "https://huggingface.co/chendelong/RemoteCLIP",
           hub_file=("chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt")),
    _entry("GeoRSCLIP-ViT-B-32", "ViT-B-32-quickgelu", layers_b=True, patch=32,
           domain="remote sensing",
           description="GeoRSCLIP ViT-B/32: OpenAI CLIP fine-tuned on RS5M (5M remote-sensing "
                       "image-text pairs)",
           source="Zhang et al., RS5M and GeoRSCLIP, IEEE TGRS 2024; "
                  "https://huggingface.co/Zilun/GeoRSCLIP",
           hub_file=("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt")),
    _entry("GeoRSCLIP-ViT-L-14", "ViT-L-14-quickgelu", layers_b=False, patch=14,
           domain="remote sensing",
           description="GeoRSCLIP ViT-L/14: OpenAI CLIP fine-tuned on RS5M (5M remote-sensing "
                       "image-text pairs)",
           source="Zhang et al., RS5M and GeoRSCLIP, IEEE TGRS 2024; "
                  "https://huggingface.co/Zilun/GeoRSCLIP",
           hub_file=("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-L-14.pt")),
    _entry("SkyCLIP-ViT-L-14", "ViT-L-14", layers_b=False, patch=14, domain="remote sensing",
           description="SkyCLIP ViT-L/14: CLIP continually pretrained on SkyScript (top 30%, "
                       "filtered by CLIP-LAION-RS)",
           source="Wang et al., SkyScript, AAAI 2024; https://github.com/wangzhecheng/SkyScript",
           download=(f"download {_SKYCLIP_URL} (the authors' release; not on the Hugging Face "
                     "Hub), unzip it and pass the epoch_20.pt inside as the checkpoint")),
]

CATALOG_ALIASES: dict[str, str] = {
    "biomedclip": CATALOG_ENTRIES[0].key,
    "quiltnet-b32": "hf-hub:wisdomik/QuiltNet-B-32",
    "quiltnet-b16": "hf-hub:wisdomik/QuiltNet-B-16",
    "bioclip": "hf-hub:imageomics/bioclip",
    "remoteclip-b32": "RemoteCLIP-ViT-B-32", "remoteclip-l14": "RemoteCLIP-ViT-L-14",
    "georsclip-b32": "GeoRSCLIP-ViT-B-32", "georsclip-l14": "GeoRSCLIP-ViT-L-14",
    "skyclip": "SkyCLIP-ViT-L-14", "skyclip-l14": "SkyCLIP-ViT-L-14",
}
