"""Re-formed last blocks: how dense embeddings are read out of a CLIP ViT.

Every readout maps what the single pass collected (:class:`BlockInputs`) to per-patch tokens in
the residual width, *before* the output head (``VisionTower.head``, applied by
:mod:`clipseg.features`). Except ``vanilla`` and ``sclip`` they all compute the re-formed block
of the paper (Eq. 2): ``Z = Proj(softmax(Attn) @ V)`` with no final residual and no final FFN.

Readouts (``ReadoutConfig.method``)
-----------------------------------
clipseg
    CLIPSeg (Liu et al., "Unveiling the Knowledge of CLIP for Training-Free Open-Vocabulary
    Semantic Segmentation", AAAI 2025). CRA: ``Attn = (k_M k_M^T + G(k_M)) * tau`` with ``k_M``
    the L2-normalised keys (heads concatenated) of a middle block, one map for all heads; DSI
    values (:func:`dsi_values`). The class token stays out of the attention unless
    ``cls_in_attention``.
kk_middle, kk_last
    The paper's Table 4 ablations: ``clipseg`` without ``G``, and with last-block keys
    ``k_L`` instead of ``k_M`` (no ``G``); same DSI values and class-token rule.
qk
    Table 4's baseline: the block's own q-k attention (per head, scale ``head_dim**-0.5``) in the
    re-formed block; same DSI values and class-token rule.
maskclip
    MaskCLIP (Zhou, Loy & Dai, ECCV 2022; github.com/chongzhou96/MaskCLIP): the last block's
    attention replaced by the identity, i.e. the value path ``out_proj(v_L)``, class token kept
    (it only sees itself). Here in the re-formed block's form (METHOD.md: no residual, no FFN);
    note that MaskCLIP's own mmseg backbone also adds the block input and the last FFN to that
    value path (``v += x; v = ffn(norm2(v), identity=v)``).
sclip
    SCLIP (Wang, Mei & Yuille, 2023; github.com/wangf3014/SCLIP): correlative self-attention
    ``softmax(q q^T s) + softmax(k k^T s)`` per head, ``s = head_dim**-0.5``; its reference code
    keeps the last block's residual and FFN: ``x = x + attn; x = x + FFN(ln_2(x))``.
clearclip
    ClearCLIP (Lan et al., ECCV 2024; github.com/mc-lan/ClearCLIP): ``softmax(q q^T s)`` per
    head, no residual, no FFN.
naclip
    NACLIP (Hajimiri, Ben Ayed & Dolz, WACV 2025; github.com/sinahmr/NACLIP): per head
    ``softmax(k k^T s + Omega)``, ``Omega[p, p'] = exp(-|pos_p - pos_p'|^2 / (2 std^2))`` over
    the patch grid (0 in the class token's row and column), no residual, no FFN (its "reduced"
    architecture).
vanilla
    The unmodified last block as its library runs it (residual + attention + FFN).

The baselines (``maskclip``, ``sclip``, ``clearclip``, ``naclip``, ``vanilla``) keep the class
token in their attention as their reference code does and read ``v_L`` only; the DSI options
(``dsi_layers``, ``dsi_mode``) and ``cls_in_attention`` apply to ``clipseg``, ``kk_middle``,
``kk_last`` and ``qk``; ``tau`` to the three k-k readouts; ``attn_scale`` to ``qk`` and the
per-head baselines.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import READOUTS, ReadoutConfig
from .errors import InvalidConfigError, InvalidInputError
from .models.towers import VisionTower
from .relation import relation_from_similarity

__all__ = [
    "BlockInputs", "cra_attention", "self_self_attention", "qk_attention", "attend",
    "gaussian_window_bias", "dsi_values", "readout_tokens", "needs_middle_keys", "dsi_blocks",
    "no_autocast",
]


def no_autocast(device: torch.device) -> AbstractContextManager:
    """Context that turns autocast off on ``device`` (for float32 similarity/softmax math)."""
    return torch.autocast(device_type=device.type, enabled=False)


@dataclass
class BlockInputs:
    """What one pass over blocks ``1..L-1`` leaves for the re-formed last block.

    Attributes
    ----------
    last : torch.Tensor
        ``(B, 1 + P, width)`` = ``x_{L-1}``, the last block's input (class token first).
    k_mid : torch.Tensor or None
        ``(B, 1 + P, width)`` keys (heads concatenated, not normalised) of the middle block M.
    dsi : list of (int, torch.Tensor)
        ``(i, x_{i-1})`` for the blocks ``i = L-1, L-2, ...`` DSI re-reads, nearest first.
    grid : tuple of int
        ``(h, w)`` patch grid, ``P = h * w``.
    """

    last: torch.Tensor
    k_mid: torch.Tensor | None
    dsi: list[tuple[int, torch.Tensor]]
    grid: tuple[int, int]


# -- attention maps ------------------------------------------------------------------------------
def cra_attention(k_mid: torch.Tensor, tau: float, eps: float, min_samples: int,
                  relation: bool = True) -> torch.Tensor:
    """CRA logits ``(k k^T + G(k)) * tau`` with ``k`` L2-normalised per token.

    Parameters
    ----------
    k_mid : torch.Tensor
        ``(B, P, C)`` keys, all heads concatenated.
    tau : float
        Temperature (paper: 6).
    eps, min_samples :
        Relation term parameters (:func:`clipseg.relation.relation_attention`).
    relation : bool
        Add ``G``; ``False`` gives plain k-k self-attention logits.

    Returns
    -------
    torch.Tensor
        ``(B, P, P)`` float32 logits (before the softmax).
    """
    with no_autocast(k_mid.device):
        k = F.normalize(k_mid.float(), dim=-1)
        logits = k @ k.transpose(1, 2)
        if relation:  # G from the same similarities (no second k k^T)
            logits = logits + relation_from_similarity(logits, eps, min_samples)
        return logits * float(tau)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, width) -> (B, heads, N, head_dim)``."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def self_self_attention(x: torch.Tensor, heads: int, scale: float,
                        bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head self-self attention ``softmax(x_h x_h^T * scale + bias)``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, N, width)`` queries or keys, heads concatenated.
    heads : int
        Number of heads; ``width`` must be divisible by it.
    scale : float
        Logit scale ``s``.
    bias : torch.Tensor or None
        ``(N, N)`` additive logit bias shared by all heads (NACLIP's window).

    Returns
    -------
    torch.Tensor
        ``(B, heads, N, N)`` float32 probabilities (rows sum to 1).
    """
    with no_autocast(x.device):
        xh = _heads(x.float(), heads)
        logits = xh @ xh.transpose(-1, -2) * float(scale)
        if bias is not None:
            logits = logits + bias.float()
        return logits.softmax(dim=-1)


def qk_attention(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Per-head query-key attention ``softmax(q_h k_h^T * scale)``.

    Returns ``(B, heads, N, N)`` float32 probabilities for ``q, k`` of shape ``(B, N, width)``.
    """
    with no_autocast(q.device):
        logits = _heads(q.float(), heads) @ _heads(k.float(), heads).transpose(-1, -2)
        return (logits * float(scale)).softmax(dim=-1)


def attend(attn: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Apply attention probabilities to values.

    Parameters
    ----------
    attn : torch.Tensor
        ``(B, N, N)`` (one map for all heads) or ``(B, heads, N, N)`` probabilities.
    v : torch.Tensor
        ``(B, N, width)`` values, heads concatenated.
    heads : int

    Returns
    -------
    torch.Tensor
        ``(B, N, width)`` in ``v``'s dtype, heads concatenated again.
    """
    if attn.ndim == 3:  # a shared map: the same as applying it to every head
        return (attn.to(v.dtype) @ v)
    b, n, c = v.shape
    out = attn.to(v.dtype) @ _heads(v, heads)  # (B, heads, N, head_dim)
    return out.transpose(1, 2).reshape(b, n, c)


def gaussian_window_bias(grid: tuple[int, int], std: float, *, with_cls: bool,
                         device: torch.device | None = None) -> torch.Tensor:
    """NACLIP's neighbourhood logit bias ``exp(-|pos_p - pos_p'|^2 / (2 std^2))``.

    Parameters
    ----------
    grid : tuple of int
        ``(h, w)`` patch grid; positions are (row, column) in patches.
    std : float
        Standard deviation in patches.
    with_cls : bool
        Prepend a zero row and column for the class token.

    Returns
    -------
    torch.Tensor
        ``(P, P)`` or ``(1 + P, 1 + P)`` float32, 1 on the patch diagonal.
    """
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=-1)  # (P, 2)
    d2 = (pos.unsqueeze(1) - pos.unsqueeze(0)).pow(2).sum(-1)
    bias = torch.exp(-d2 / (2.0 * float(std) ** 2))
    if with_cls:
        bias = F.pad(bias, (1, 0, 1, 0))
    return bias


# -- values --------------------------------------------------------------------------------------
def dsi_values(tower: VisionTower, inputs: BlockInputs, start: int = 0) -> list[torch.Tensor]:
    """DSI value tensors: ``v_L`` then ``v~_i`` for the blocks in ``inputs.dsi``.

    ``x~_i = x_{i-1} + ls_2(FFN_i(ln_2^i(x_{i-1})))`` (block i's attention skipped) and
    ``v~_i = ln_1^L(x~_i) @ W^v_L + b^v_L`` (the LAST block's value projection).

    Parameters
    ----------
    tower : VisionTower
    inputs : BlockInputs
    start : int
        First token to compute (0: all, 1: patches only); every step is per token, so the
        tokens before ``start`` are simply not computed.

    Returns
    -------
    list of torch.Tensor
        ``1 + len(inputs.dsi)`` tensors ``(B, N - start, width)``; only values (no q, k).
    """
    last = tower.num_layers
    return [tower.value(last, x) for x in _dsi_inputs(tower, inputs, start)]


def _dsi_inputs(tower: VisionTower, inputs: BlockInputs, start: int) -> list[torch.Tensor]:
    """``x_{L-1}`` then ``x~_i`` for the DSI blocks, tokens ``start:`` only."""
    out = [inputs.last[:, start:]]
    for index, x_in in inputs.dsi:
        out.append(tower.ffn_residual(index, x_in[:, start:]))
    return out


def _mean_normed_input(tower: VisionTower, inputs: BlockInputs, start: int) -> torch.Tensor:
    """``mean_j ln_1^L(x_j)`` over DSI's inputs: the value projection is affine, so the mean of
    the values equals the projection of this mean (one projection instead of one per input)."""
    last = tower.num_layers
    normed = [tower.norm_1(last, x) for x in _dsi_inputs(tower, inputs, start)]
    return normed[0] if len(normed) == 1 else torch.stack(normed, dim=0).mean(dim=0)


# -- the readouts --------------------------------------------------------------------------------
def _scale(tower: VisionTower, cfg: ReadoutConfig) -> float:
    return cfg.attn_scale if cfg.attn_scale is not None else tower.head_dim ** -0.5


def _paper_family(tower: VisionTower, inputs: BlockInputs,
                  cfg: ReadoutConfig) -> list[torch.Tensor]:
    """clipseg / kk_middle / kk_last / qk: one attention map, DSI values, no residual/FFN."""
    last = tower.num_layers
    start = 0 if cfg.cls_in_attention else 1  # tokens taking part: patches (+ class token)
    if cfg.method == "qk":
        y = tower.norm_1(last, inputs.last[:, start:])
        q, k = tower.project_in(last, y, "q"), tower.project_in(last, y, "k")
        attn = qk_attention(q, k, tower.num_heads, _scale(tower, cfg))
    else:
        if cfg.method == "kk_last":
            keys = tower.key(last, inputs.last)
        else:
            if inputs.k_mid is None:
                raise InvalidInputError(f"readout {cfg.method!r}: expected middle-layer keys "
                                        "in BlockInputs.k_mid, got None")
            keys = inputs.k_mid
        relation = cfg.relation and cfg.method == "clipseg"
        with no_autocast(keys.device):
            attn = cra_attention(keys[:, start:], cfg.tau, cfg.eps, cfg.min_samples,
                                 relation=relation).softmax(dim=-1)
    if cfg.dsi_mode == "value_mean":
        y = _mean_normed_input(tower, inputs, start)  # mean_j v_j = project(mean_j ln_1(x_j))
        if attn.ndim == 3:
            # one map for all heads, rows summing to 1: attn @ (y W^T + b) = (attn @ y) W^T + b,
            # so attend first, then the value and output projections as one fused product
            outs = [tower.value_out(last, attend(attn, y, tower.num_heads))]
        else:
            ctx = attend(attn, tower.project_in(last, y, "v"), tower.num_heads)
            outs = [tower.out_proj(last, ctx)]
    else:
        outs = [tower.out_proj(last, attend(attn, v, tower.num_heads))
                for v in dsi_values(tower, inputs, start)]
    return [z[:, 1 - start:] for z in outs]  # drop the class token row when it took part


def _baseline(tower: VisionTower, inputs: BlockInputs, cfg: ReadoutConfig) -> torch.Tensor:
    """maskclip / sclip / clearclip / naclip / vanilla, class token included; returns all tokens."""
    last, heads, x = tower.num_layers, tower.num_heads, inputs.last
    if cfg.method == "vanilla":
        return tower.run_block(last, x)
    y = tower.norm_1(last, x)
    v = tower.project_in(last, y, "v")  # each readout computes only the projections it reads
    if cfg.method == "maskclip":
        return tower.out_proj(last, v)
    s = _scale(tower, cfg)
    if cfg.method == "sclip":
        q, k = tower.project_in(last, y, "q"), tower.project_in(last, y, "k")
        attn = self_self_attention(q, heads, s) + self_self_attention(k, heads, s)
        x = x + tower.attn_residual_branch(last, attend(attn, v, heads))
        return tower.ffn_residual(last, x)
    if cfg.method == "clearclip":
        attn = self_self_attention(tower.project_in(last, y, "q"), heads, s)
    elif cfg.method == "naclip":
        bias = gaussian_window_bias(inputs.grid, cfg.naclip_std, with_cls=True, device=x.device)
        attn = self_self_attention(tower.project_in(last, y, "k"), heads, s, bias=bias)
    else:
        raise InvalidConfigError(f"method: expected one of {', '.join(READOUTS)}, "
                                 f"got {cfg.method!r}")
    return tower.out_proj(last, attend(attn, v, heads))


_PAPER = ("clipseg", "kk_middle", "kk_last", "qk")


def needs_middle_keys(cfg: ReadoutConfig) -> bool:
    """Whether ``cfg``'s readout uses middle-layer keys ``k_M``."""
    return cfg.method in ("clipseg", "kk_middle")


def dsi_blocks(cfg: ReadoutConfig, num_layers: int) -> list[int]:
    """Blocks (1-based, nearest first) whose inputs DSI re-reads for ``cfg``; may be empty."""
    if cfg.method not in _PAPER:
        return []
    return [num_layers - j for j in range(1, cfg.dsi_layers)]


def readout_tokens(tower: VisionTower, inputs: BlockInputs,
                   cfg: ReadoutConfig) -> list[torch.Tensor]:
    """Patch tokens of the re-formed last block, before the output head.

    Parameters
    ----------
    tower : VisionTower
    inputs : BlockInputs
        Collected by one pass over blocks ``1..L-1``.
    cfg : ReadoutConfig

    Returns
    -------
    list of torch.Tensor
        One ``(B, P, width)`` tensor per value source to embed separately: a single one except
        for DSI with ``dsi_mode="embedding_mean"`` (``dsi_layers`` tensors, whose normalised
        embeddings the caller averages).
    """
    if cfg.method in _PAPER:
        return _paper_family(tower, inputs, cfg)
    return [_baseline(tower, inputs, cfg)[:, 1:]]
