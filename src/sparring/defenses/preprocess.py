"""Input filters placed in front of a model: Gaussian blur, median filter, JPEG, bit-depth reduction.

Each is an nn.Module on images (B, C, H, W) in [0, 1] that declares `differentiable` and `random`
and gives `surrogate()`, the differentiable approximation BPDA back-propagates through (Athalye,
Carlini, Wagner 2018, arXiv:1802.00420; see bpda.py). Plain torch, no image library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..image import gaussian_kernels, pad, separable_blur
from .base import DefenseSpec, Param, register

BLUR_ARTICLE = ("Jezequel, 'Protecting networks against adversarial attacks' "
                "(blog, shared/seeds/000_421514ffc245d9b2.txt)")


def _int_in(name: str, value: int, lo: int, hi: int | None = None, odd: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok or (odd and value % 2 == 0):
        want = f"an {'odd ' if odd else ''}integer " + (f"in [{lo}, {hi}]" if hi is not None else f">= {lo}")
        raise InputError(f"expected {name} to be {want}, got {value!r}")
    return value


def _check_image(x: Tensor, channels: tuple[int, ...] | None = None) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"expected a floating-point image batch of shape (B, C, H, W), got {got}")
    if channels is not None and x.shape[1] not in channels:
        raise InputError(f"expected {' or '.join(map(str, channels))} channels, got {x.shape[1]}")


class Filter(nn.Module):
    """An input filter: declares ``differentiable`` and ``random``; ``surrogate()`` is the differentiable
    approximation BPDA back-propagates through (itself when differentiable, else the identity)."""

    differentiable: ClassVar[bool] = False
    random: ClassVar[bool] = False

    def surrogate(self) -> nn.Module:
        """The differentiable approximation BPDA uses (arXiv:1802.00420)."""
        return self if self.differentiable else nn.Identity()


class GaussianBlur(Filter):
    """Gaussian blur: depthwise separable convolution with reflect (REFLECT_101) padding.

    The blur article's defense (Gaussian filter applied at training and at test time, best at
    sigma = 1.5; it used cv2.GaussianBlur(img, (0, 0), sigma)). Differentiable, so it is its own
    surrogate and an attack differentiates straight through it.
    sigma: standard deviation in pixels (>= 0; 0 is the identity). kernel_size: odd width; by
    default round(8 * sigma + 1) | 1, OpenCV's rule for float images. Any image size works.
        >>> defended = nn.Sequential(GaussianBlur(1.5), net)
        >>> logits = defended(x)
    """

    differentiable = True

    def __init__(self, sigma: float, kernel_size: int | None = None) -> None:
        super().__init__()
        if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 <= sigma < math.inf:
            raise InputError(f"expected sigma to be a finite number >= 0, got {sigma!r}")
        self.sigma = float(sigma)
        default = int(math.floor(8 * self.sigma + 1.5)) | 1
        self.kernel_size = default if kernel_size is None else _int_in("kernel_size", kernel_size, 1, odd=True)

    def kernel(self, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
        """The normalized 1-D kernel (kernel_size,), computed in float64."""
        k = gaussian_kernels(torch.tensor([self.sigma], dtype=torch.float64), self.kernel_size, torch.float64)[0]
        return k.to(dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        if self.sigma == 0 or self.kernel_size == 1:
            return x
        return separable_blur(x, self.kernel(x.dtype, x.device), "reflect")

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, kernel_size={self.kernel_size}"


class MedianBlur(Filter):
    """Median filter over a window x window neighbourhood, per channel, replicate padding (as cv2.medianBlur).

    The blur article's second filter (windows 3..9): it removes small details and impulse noise
    while keeping edges. Not differentiable in a useful sense: its gradient picks one pixel per
    window, a sparse, masking signal. surrogate() is GaussianBlur(sqrt((window**2 - 1) / 12),
    kernel_size=window): a linear smoother over the same window, with the spread of a box of that
    width, because BPDA wants g(x) ~ f(x) (Athalye et al. 2018, arXiv:1802.00420) and the median
    smooths textures like a blur while it leaves ramps and flat regions as they are, like both.
    window: odd integer >= 1 (1 is the identity).
        >>> defended = Defended(MedianBlur(3), net)
        >>> x_adv = pgd(defended.for_attack(), x, y, threat=ThreatModel(Norm.LINF, 8 / 255))
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = _int_in("window", window, 1, odd=True)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        if self.window == 1:
            return x
        k = self.window
        patches = pad(x, k // 2, "replicate").unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k)
        return patches.reshape(*x.shape, k * k).median(dim=-1).values

    def surrogate(self) -> nn.Module:
        return GaussianBlur(math.sqrt((self.window**2 - 1) / 12), kernel_size=self.window)

    def extra_repr(self) -> str:
        return f"window={self.window}"


_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
           47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32
_RGB_TO_YCC = [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
_YCC_TO_RGB = [[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]]


def quant_table(quality: int, chroma: bool = False) -> Tensor:
    """The IJG (JPEG Annex K) table scaled by quality as libjpeg does, clipped to [1, 255]: (8, 8)."""
    quality = _int_in("quality", quality, 1, 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float64).view(8, 8)
    return ((base * scale + 50) // 100).clamp(1, 255)


def _dct_matrix() -> Tensor:
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5
    d[0] = math.sqrt(1 / 8)
    return d  # orthonormal DCT-II: coefficients = D @ block @ D.T


class JPEG(Filter):
    """Baseline JPEG compression and decompression, in torch (Dziugaite et al. 2016, arXiv:1608.00853;
    Guo et al. 2018, arXiv:1711.00117).

    8-bit samples, RGB -> YCbCr (JFIF; C = 1 is coded as luminance only), 8x8 orthonormal DCT,
    quantization by the IJG tables scaled by quality (libjpeg's formula), rounding, inverse DCT,
    back to RGB, 8-bit output. No chroma subsampling (4:4:4, like PIL's subsampling=0), so it loses
    less than encoders' default 4:2:0. Sides are padded by edge replication to a multiple of 8 and
    cropped back. Inputs are clamped to [0, 1]. The rounding has a zero gradient almost
    everywhere, so surrogate() is the identity, as Athalye et al. 2018 (arXiv:1802.00420) used it.
    quality: integer in [1, 100].
        >>> defended = Defended(JPEG(75), net)
        >>> x_adv = pgd(defended.for_attack(), x, y, threat=ThreatModel(Norm.LINF, 8 / 255))
    """

    def __init__(self, quality: int) -> None:
        super().__init__()
        self.quality = _int_in("quality", quality, 1, 100)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, channels=(1, 3))
        b, c, h, w = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        v = (x.to(dtype).clamp(0, 1) * 255).round()
        to_ycc, to_rgb = (torch.tensor(m, dtype=dtype, device=x.device) for m in (_RGB_TO_YCC, _YCC_TO_RGB))
        if c == 3:
            v = (torch.einsum("ij,bjhw->bihw", to_ycc, v) + v.new_tensor([0, 128, 128]).view(1, 3, 1, 1)).round()
            v = v.clamp(0, 255)
        ph, pw = -h % 8, -w % 8
        v = F.pad(v, (0, pw, 0, ph), mode="replicate") if ph or pw else v
        blocks = (v - 128).reshape(b, c, (h + ph) // 8, 8, (w + pw) // 8, 8).transpose(3, 4)
        d = _dct_matrix().to(dtype=dtype, device=x.device)
        q = torch.stack([quant_table(self.quality, chroma=i > 0) for i in range(c)])
        q = q.to(dtype=dtype, device=x.device).view(1, c, 1, 1, 8, 8)
        coef = (d @ blocks @ d.T / q).round() * q
        v = (d.T @ coef @ d + 128).transpose(3, 4).reshape(b, c, h + ph, w + pw)[:, :, :h, :w]
        if c == 3:
            v = torch.einsum("ij,bjhw->bihw", to_rgb, v - v.new_tensor([0, 128, 128]).view(1, 3, 1, 1))
        return (v.round().clamp(0, 255) / 255).to(x.dtype)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


class BitDepth(Filter):
    """Bit-depth reduction, feature squeezing's first squeezer (Xu et al. 2018, arXiv:1704.01155).

    round(x * (2**bits - 1)) / (2**bits - 1) on x clamped to [0, 1]: 2**bits levels. Its
    gradient is zero almost everywhere, so surrogate() is the identity (the straight-through
    estimator; BPDA, Athalye et al. 2018, arXiv:1802.00420). bits: integer in [1, 8]; 8 is the
    identity on 8-bit images.
        >>> defended = Defended(BitDepth(1), net)  # MNIST setting of the paper; 5 bits on CIFAR-10
        >>> x_adv = pgd(defended.for_attack(), x, y, threat=ThreatModel(Norm.LINF, 0.3))
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = _int_in("bits", bits, 1, 8)

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x)
        levels = 2**self.bits - 1
        return (x.clamp(0, 1) * levels).round() / levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def _in_front(cls: type[Filter]) -> Callable[[Mapping[str, Any], Mapping[str, Tensor]], nn.Module]:
    """A spec's ``front``: the filter built from the entry's parameters."""
    return lambda entry, parts: cls(**entry["params"])


def _filter_spec(name: str, cls: type[Filter], paper: str, params: tuple[Param, ...], description: str) -> None:
    register(DefenseSpec(name, kind="preprocess", differentiable=cls.differentiable, random=cls.random, paper=paper,
                         description=description, target=cls, params=params, front=_in_front(cls)))


_filter_spec("gaussian-blur", GaussianBlur, BLUR_ARTICLE,
             (Param("sigma", "float", 1.5, "standard deviation in pixels (0: the identity)"),
              Param("kernel_size", "int", None, "odd width (default: OpenCV's rule for float images)")),
             "Gaussian blur in front of the model (train and test time, the blur article)")
_filter_spec("median-blur", MedianBlur, BLUR_ARTICLE, (Param("window", "int", 3, "odd window side"),),
             "median filter in front of the model; BPDA through a Gaussian of the same spread")
_filter_spec("jpeg", JPEG, "Dziugaite et al. 2016, arXiv:1608.00853; Guo et al. 2018, arXiv:1711.00117",
             (Param("quality", "int", 75, "JPEG quality in [1, 100]"),),
             "JPEG compression and decompression in front of the model; BPDA through the identity")
_filter_spec("bit-depth", BitDepth, "Xu, Evans, Qi 2018 (feature squeezing), arXiv:1704.01155",
             (Param("bits", "int", 5, "bits per channel in [1, 8]"),),
             "bit-depth reduction in front of the model; BPDA through the identity")

__all__ = ["BitDepth", "Filter", "GaussianBlur", "JPEG", "MedianBlur", "quant_table"]
