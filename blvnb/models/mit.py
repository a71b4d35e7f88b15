"""Mix Transformer (MiT): SegFormer's hierarchical encoder (Xie et al., NeurIPS 2021), written for blvnb.

timm has no MiT. segmentation-models-pytorch has one, but it would be a dependency for ~120 lines, and
ImageNet weights would still have to come from a file; the book's models page says why we wrote our
own. Module names follow the SegFormer release (``patch_embed1``, ``block1.0.attn.q``, …, ``norm1``),
so its ImageNet checkpoints (``mit_b0.pth`` … ``mit_b5.pth``) load with ``weights=PATH`` or from a weights
folder (``weights=DIR``); mmsegmentation's renamed MiT checkpoints load too (:mod:`blvnb.models.weights`).

Four stages; each: an overlapping patch embedding (a strided conv, kernel > stride, then LayerNorm),
``depth`` blocks of efficient self-attention and Mix-FFN, a LayerNorm. No position embedding: the 3×3
depthwise conv inside Mix-FFN carries position.

``# image -> [1/4, 1/8, 1/16, 1/32]``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

from blvnb.models.backbones import Features, load_weights, no_weights_error, weights_file

# SegFormer's Table 6: channels, depths; every size uses heads (1, 2, 5, 8), reduction ratios (8, 4, 2, 1)
# and MLP ratio 4. "small" is ours: the quick profile's CPU-sized member of the family.
MIT_SIZES = {
    "b0": dict(dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": dict(dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": dict(dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
    "small": dict(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), heads=(1, 1, 2, 4)),
}


class OverlapPatchEmbed(nn.Module):
    """Strided conv with kernel > stride (patches overlap), then LayerNorm; returns tokens and the grid."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from the token grid shrunk R×R by a strided
    conv (SegFormer Eq. 2): cost O(N²/R²) instead of O(N²)."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)  # the sequence reduction, K = Reshape(N/R², C·R²) W
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        n, l, c = x.shape
        q = self.q(x).view(n, l, self.heads, c // self.heads).transpose(1, 2)
        kv = x
        if self.sr_ratio > 1:
            kv = self.norm(self.sr(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(kv).view(n, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # Attention(Q, K, V) = softmax(Q Kᵀ / √d) V
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, l, c))


class DWConv(nn.Module):
    """3×3 depthwise conv on the token grid (Mix-FFN's position signal)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, h, w):
        n, l, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """x_out = MLP(GELU(Conv3×3(MLP(x_in)))) + x_in  (SegFormer Eq. 3; the residual is in the block)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MiT(nn.Module):
    """Mix Transformer encoder; ``size`` is one of :data:`MIT_SIZES` (b0 … b5, small)."""

    def __init__(self, size: str = "b0", drop_path_rate: float = 0.1, pretrained: bool = False, weights=None,
                 heads=(1, 2, 5, 8), sr_ratios=(8, 4, 2, 1), mlp_ratio: int = 4):
        super().__init__()
        cfg = MIT_SIZES[size]
        dims, depths, heads = cfg["dims"], cfg["depths"], cfg.get("heads", heads)
        n = sum(depths)
        rates = [drop_path_rate * j / max(1, n - 1) for j in range(n)]  # stochastic depth grows with depth
        cin, start = 3, 0
        for i, (dim, depth) in enumerate(zip(dims, depths), start=1):
            kernel, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", OverlapPatchEmbed(cin, dim, kernel, stride))
            setattr(self, f"block{i}", nn.ModuleList(
                Block(dim, heads[i - 1], sr_ratios[i - 1], mlp_ratio, rates[start + j]) for j in range(depth)))
            setattr(self, f"norm{i}", nn.LayerNorm(dim))
            cin, start = dim, start + depth
        self.feature_info = Features(list(dims), [4, 8, 16, 32])
        self.apply(self._init)
        # the name of its file in a weights folder (blvnb.models.weights.WEIGHTS_FILES); "small" is ours: none
        self.weights_name = None if size == "small" else f"mit_{size}"
        if weights is not None:
            load_weights(self, weights_file(weights, self.weights_name))
        elif pretrained:  # timm has no MiT weights: only a local file can provide them
            raise no_weights_error(f"MiT-{size}")

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):  # fan-out normal, as for the paper's convs
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            outs.append(x)
        return outs
