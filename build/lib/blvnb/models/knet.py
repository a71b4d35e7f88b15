"""K-Net for semantic segmentation (Zhang et al., NeurIPS 2021): a kernel generator (UperHead, whose
classifier weights are the initial class kernels and whose logits are the initial masks) followed by
iterations of dynamic kernel update, each of which predicts new masks.

``# [1/4, 1/8, 1/16, 1/32] -> 1/4``; the masks of the generator and of every iteration but the last are
aux outputs (weight 1 each, as the released configuration).
"""

from __future__ import annotations

import torch
from torch import nn

from blvnb.models.heads import UperHead


class KernelUpdate(nn.Module):
    """One iteration: group-feature assembling, adaptive kernel update, kernel interaction, new masks."""

    def __init__(self, channels: int = 512, heads: int = 8, ffn: int = 2048, updator: int | None = None):
        super().__init__()
        c = channels
        # mmsegmentation's K-Net configuration gives the kernel updator 256 of the kernels' 512 channels:
        # it acts on each 256-channel slice of a kernel (and of its assembled features) with shared weights
        u = self.updator = updator or c // 2
        if c % u:
            raise ValueError(f"the kernel updator's width {u} must divide the {c} channels")
        self.feat_proj = nn.Conv2d(c, c, 1)  # the features the kernels act on
        # adaptive kernel update (K-Net Eq. 3–5)
        self.phi_f = nn.Linear(u, 2 * u)  # from assembled features: gate input, update value
        self.phi_k = nn.Linear(u, 2 * u)  # from previous kernels: gate input, kept value
        self.gate_f = nn.Sequential(nn.Linear(u, u), nn.LayerNorm(u))
        self.gate_k = nn.Sequential(nn.Linear(u, u), nn.LayerNorm(u))
        self.norm_f, self.norm_k = nn.LayerNorm(u), nn.LayerNorm(u)
        self.update_out = nn.Sequential(nn.Linear(u, u), nn.LayerNorm(u), nn.ReLU(inplace=True))
        # kernel interaction: self-attention among the class kernels, then an FFN
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(c)
        self.ffn = nn.Sequential(nn.Linear(c, ffn), nn.ReLU(inplace=True), nn.Linear(ffn, c))
        self.ffn_norm = nn.LayerNorm(c)
        self.mask_fc = nn.Sequential(nn.Linear(c, c, bias=False), nn.LayerNorm(c), nn.ReLU(inplace=True),
                                     nn.Linear(c, c))

    def forward(self, feats: torch.Tensor, kernels: torch.Tensor, masks: torch.Tensor):
        """feats N×C×h×w, kernels N×K×C, masks N×K×h×w → (new masks N×K×h×w, new kernels N×K×C)."""
        x = self.feat_proj(feats)
        # F^K = Σ_u σ(M_{i-1}(u)) · F(u)  (group-feature assembling)
        fk = torch.einsum("nkhw,nchw->nkc", masks.sigmoid(), x)
        n, nk, c = fk.shape
        # the update works on slices of ``self.updator`` channels: N×K×C -> N×K×(C/u)×u
        f_in, f_val = self.phi_f(fk.reshape(n, nk, -1, self.updator)).chunk(2, -1)
        k_in, k_val = self.phi_k(kernels.reshape(n, nk, -1, self.updator)).chunk(2, -1)
        # G^F = φ1(F^K) ⊙ φ2(K_{i-1})
        g = f_in * k_in
        # G^K = σ(ψ1(G^F)), G^F = σ(ψ2(G^F))
        gate_k, gate_f = torch.sigmoid(self.gate_k(g)), torch.sigmoid(self.gate_f(g))
        # K̃ = G^F ⊙ ψ3(F^K) + G^K ⊙ ψ4(K_{i-1})
        k = self.update_out(gate_f * self.norm_f(f_val) + gate_k * self.norm_k(k_val)).reshape(n, nk, c)
        k = self.attn_norm(k + self.attn(k, k, k, need_weights=False)[0])
        k = self.ffn_norm(k + self.ffn(k))
        # M_i = g(K_i) ∗ F  (the updated kernels, through an MLP, convolve the features)
        new_masks = torch.einsum("nkc,nchw->nkhw", self.mask_fc(k), x)
        return new_masks, k


class KNetHead(nn.Module):
    """UperHead kernel generator + ``stages`` kernel-update iterations (3 in the paper)."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, stages: int = 3,
                 heads: int = 8, ffn: int = 2048):
        super().__init__()
        self.generator = UperHead(in_channels, num_classes, channels)
        self.stages = nn.ModuleList(KernelUpdate(channels, heads, ffn) for _ in range(stages))
        self.aux_weights = (1.0,) * stages

    def decode(self, feats: list[torch.Tensor]) -> dict:
        x = self.generator.features(feats)
        masks = self.generator.classifier(self.generator.dropout(x))
        kernels = self.generator.classifier.weight.flatten(1).expand(x.shape[0], -1, -1)  # K×C class kernels
        all_masks = [masks]
        for stage in self.stages:
            masks, kernels = stage(x, kernels, masks)
            all_masks.append(masks)
        return {"out": all_masks[-1], "features": x, "aux": all_masks[:-1]}

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.decode(feats)["out"]
