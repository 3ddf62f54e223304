"""Image operations shared by defenses and attacks: padding by index, Gaussian kernels, separable blur.

The blur article's GaussianBlur defense (one sigma, OpenCV's reflect padding) and EOT's random blur (one
sigma per image, replicate padding) are both `separable_blur` with different kernels and padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_kernels", "pad", "separable_blur"]


def _pad_index(n: int, radius: int, mode: str, device: torch.device) -> Tensor:
    """Source indices of a padded axis: "reflect" (OpenCV REFLECT_101, any radius) or "replicate"."""
    i = torch.arange(-radius, n + radius, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    i = i.remainder(2 * (n - 1))
    return torch.where(i >= n, 2 * (n - 1) - i, i)


def pad(x: Tensor, radius: int, mode: str) -> Tensor:
    """Pad the last two axes by ``radius`` on each side, "reflect" (REFLECT_101) or "replicate"."""
    h, w = x.shape[-2:]
    x = x.index_select(-1, _pad_index(w, radius, mode, x.device))
    return x.index_select(-2, _pad_index(h, radius, mode, x.device))


def gaussian_kernels(sigma: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """Normalized 1-D Gaussian kernels of odd ``size``, one row per sigma (sigma (B,) -> (B, size));
    sigma 0 gives the identity kernel (a 1 in the middle)."""
    d = torch.arange(size, dtype=dtype, device=sigma.device) - (size - 1) / 2
    s = sigma.to(dtype)[:, None]
    k = torch.where(s > 0, torch.exp(-(d[None] ** 2) / (2 * s.clamp_min(1e-12) ** 2)), (d[None] == 0).to(dtype))
    return k / k.sum(dim=1, keepdim=True)


def separable_blur(x: Tensor, kernels: Tensor, mode: str) -> Tensor:
    """Blur (B, C, H, W) images with a separable kernel, rows then columns, padded by ``mode``: one kernel
    (K,) for every image, or one per image (B, K) (applied to each of its channels)."""
    b, c, h, w = x.shape
    r = kernels.shape[-1] // 2
    padded = pad(x, r, mode)
    if kernels.dim() == 1:
        out = padded.reshape(b * c, 1, h + 2 * r, w + 2 * r)
        out = F.conv2d(F.conv2d(out, kernels.view(1, 1, 1, -1)), kernels.view(1, 1, -1, 1))
        return out.reshape(b, c, h, w)
    k = kernels.repeat_interleave(c, dim=0)  # (B*C, K)
    out = F.conv2d(padded.reshape(1, b * c, h + 2 * r, w + 2 * r), k[:, None, None, :], groups=b * c)
    return F.conv2d(out, k[:, None, :, None], groups=b * c).reshape(b, c, h, w)
