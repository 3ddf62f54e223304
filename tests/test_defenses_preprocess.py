"""Input-filter defenses (Gaussian/median blur, JPEG, bit depth) and BPDA, against oracles."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from sparring.defenses import DEFENSES
from sparring.defenses.bpda import BPDA, Defended, bpda, is_differentiable, is_random
from sparring.defenses.preprocess import JPEG, BitDepth, GaussianBlur, MedianBlur, quant_table
from sparring.errors import InputError

FACTORIES = {"gaussian": lambda: GaussianBlur(1.5), "median": lambda: MedianBlur(3), "jpeg": lambda: JPEG(50),
             "bits": lambda: BitDepth(3)}


def smooth(c: int, h: int, w: int, seed: int = 0, texture: float = 0.05) -> torch.Tensor:
    """A smooth 8-bit image in [0, 1] with a little texture, (1, c, h, w)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 3 * yy), 0.5 + 0.4 * torch.cos(5 * yy), xx * yy])[:c]
    noise = torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))
    return ((base + texture * noise).clamp(0, 1) * 255).round()[None] / 255


def numpy_blur(x: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Direct 2-D correlation with the outer-product Gaussian, numpy reflect (= OpenCV REFLECT_101) padding."""
    r = size // 2
    d = np.arange(size) - r
    k1 = np.exp(-(d**2) / (2 * sigma**2))
    k2 = np.outer(k1, k1) / k1.sum() ** 2
    padded = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="reflect")
    h, w = x.shape[-2:]
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(size):
        for j in range(size):
            out += k2[i, j] * padded[..., i:i + h, j:j + w]
    return out


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("hw", [(28, 28), (30, 30), (13, 9)])
def test_shape_dtype_bounds(name: str, c: int, hw: tuple[int, int]) -> None:
    x = torch.rand(2, c, *hw, generator=torch.Generator().manual_seed(c))
    for dtype in (torch.float32, torch.float64):
        out = FACTORIES[name]()(x.to(dtype))
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6
        assert not torch.equal(out, x.to(dtype))  # it does filter


def test_identity_settings_are_exact() -> None:
    x = torch.rand(2, 3, 11, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(GaussianBlur(0)(x), x)
    assert torch.equal(GaussianBlur(2.0, kernel_size=1)(x), x)
    assert torch.equal(MedianBlur(1)(x), x)
    grid = (x * 255).round() / 255
    assert torch.equal(BitDepth(8)(grid), grid)


@pytest.mark.parametrize("sigma,size,hw", [(1.5, None, (30, 28)), (0.8, 5, (9, 7)), (3.0, None, (5, 7))])
def test_gaussian_matches_numpy_reference(sigma: float, size: int | None, hw: tuple[int, int]) -> None:
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    blur = GaussianBlur(sigma, kernel_size=size)
    expected = size if size is not None else int(math.floor(8 * sigma + 1.5)) | 1  # OpenCV's rule, float images
    assert blur.kernel_size == expected
    ref = numpy_blur(x.double().numpy(), sigma, expected)  # (3.0 on 5x7: kernel 25, reflected several times)
    assert np.abs(blur(x).numpy() - ref).max() < 1e-5


def test_gaussian_gradcheck() -> None:
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    assert torch.autograd.gradcheck(GaussianBlur(1.0), (x,))


@pytest.mark.parametrize("window,c", [(3, 1), (5, 3), (3, 3)])
def test_median_matches_numpy_reference(window: int, c: int) -> None:
    x = torch.rand(2, c, 10, 13, generator=torch.Generator().manual_seed(3))
    r = window // 2
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")  # cv2.medianBlur's border
    windows = np.lib.stride_tricks.sliding_window_view(padded, (window, window), axis=(2, 3))
    ref = np.median(windows.reshape(*x.shape, -1), axis=-1)
    assert np.array_equal(MedianBlur(window)(x).numpy(), ref)


def test_median_removes_salt_and_pepper() -> None:
    x = smooth(1, 32, 32, texture=0.0)
    g = torch.Generator().manual_seed(4)
    hit = torch.rand(x.shape, generator=g) < 0.05
    noisy = torch.where(hit, (torch.rand(x.shape, generator=g) < 0.5).float(), x)
    before, after = (noisy - x).abs(), (MedianBlur(3)(noisy) - x).abs()
    assert int(hit.sum()) > 20 and after.mean() < 0.3 * before.mean()
    assert after[hit].mean() < 0.1 * before[hit].mean() and after.max() < 0.1  # no impulse survives


def test_jpeg_quality_100_close_and_error_monotone() -> None:
    x = smooth(3, 30, 30)
    assert (JPEG(100)(x) - x).abs().max() < 0.02
    errors = [float((JPEG(q)(x) - x).abs().mean()) for q in (100, 90, 50, 10)]
    assert errors == sorted(errors) and errors[-1] > 2 * errors[1]
    gray = x[:, :1]
    assert (JPEG(100)(gray) - gray).abs().max() < 0.02
    assert (JPEG(90)(gray) - gray).abs().mean() < (JPEG(10)(gray) - gray).abs().mean()


def test_jpeg_constant_blocks_and_recompression() -> None:
    colors = torch.rand(1, 3, 2, 3, generator=torch.Generator().manual_seed(5))
    x = colors.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # six constant 8x8 blocks
    out = JPEG(50)(x)
    blocks = out.reshape(1, 3, 2, 8, 3, 8)
    assert torch.equal(blocks.amax(dim=(3, 5)), blocks.amin(dim=(3, 5)))  # still constant
    assert (out - x).abs().max() < 0.05
    gray = torch.full((1, 3, 16, 16), 128 / 255)
    assert torch.equal(JPEG(10)(gray), gray)  # YCbCr (128, 128, 128): every coefficient is 0
    y = smooth(3, 24, 32)
    once = JPEG(50)(y)
    assert (JPEG(50)(once) - once).abs().mean() < 0.25 * (once - y).abs().mean()


def test_jpeg_quant_tables_follow_libjpeg() -> None:
    assert torch.equal(quant_table(50)[0, :3], torch.tensor([16.0, 11, 10], dtype=torch.float64))
    assert bool((quant_table(100) == 1).all()) and float(quant_table(1).max()) == 255
    assert float(quant_table(10, chroma=True)[7, 7]) == min(255, (99 * 500 + 50) // 100)
    assert float(quant_table(75)[0, 0]) == (16 * 50 + 50) // 100


@pytest.mark.parametrize("quality", [90, 50])
def test_jpeg_agrees_with_libjpeg(quality: int) -> None:
    pil = pytest.importorskip("PIL.Image")
    x = smooth(3, 24, 32)
    buf = io.BytesIO()
    pil.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
        buf, format="JPEG", quality=quality, subsampling=0)
    ref = torch.from_numpy(np.array(pil.open(buf))).permute(2, 0, 1)[None].float() / 255
    assert (JPEG(quality)(x) - ref).abs().mean() < 1 / 255  # integer DCT and rounding ties aside


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_levels(bits: int) -> None:
    out = BitDepth(bits)(torch.linspace(0, 1, 2000).view(1, 1, 40, 50))
    levels = torch.unique(out)
    assert len(levels) == 2**bits
    assert torch.allclose(levels, torch.arange(2**bits) / (2**bits - 1))


def _grad(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((module(x) * weight).sum(), x)
    return grad


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_bpda_forward_exact_and_backward_is_surrogate(name: str) -> None:
    g = torch.Generator().manual_seed(6)
    x, weight = torch.rand(2, 3, 12, 10, generator=g), torch.randn(2, 3, 12, 10, generator=g)
    m = FACTORIES[name]()
    wrapped = bpda(m)
    assert torch.equal(wrapped(x), m(x)) and is_differentiable(wrapped)
    assert torch.allclose(_grad(wrapped, x, weight), _grad(m.surrogate(), x, weight), atol=1e-6)
    if name in ("jpeg", "bits"):
        assert torch.equal(_grad(wrapped, x, weight), weight)  # identity surrogate: identity gradient
    if name == "median":
        assert isinstance(m.surrogate(), GaussianBlur) and m.surrogate().kernel_size == 3
        assert not torch.allclose(_grad(wrapped, x, weight), weight)
    if name == "gaussian":
        assert wrapped is m  # its own surrogate


def test_defended_for_attack_restores_gradients() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    for pre in (BitDepth(2), JPEG(30)):
        raw = Defended(pre, net)
        attack = raw.for_attack()
        assert not raw.differentiable and attack.differentiable and isinstance(attack.preprocess, BPDA)
        assert torch.equal(attack(x), raw(x)) and torch.equal(raw(x), net(pre(x)))
        ones = torch.ones(4, 10)
        assert float(_grad(raw, x, ones).abs().max()) == 0  # masked: round() has a zero gradient
        assert float(_grad(attack, x, ones).abs().min()) > 0
    blurred = Defended(GaussianBlur(1.0), net)
    assert blurred.for_attack() is blurred and not blurred.random


def test_bpda_through_sequential_and_flags() -> None:
    chain = nn.Sequential(nn.Identity(), MedianBlur(3), GaussianBlur(0.5))
    assert not is_differentiable(chain) and not is_random(chain)
    attackable = bpda(chain)
    x = torch.rand(1, 1, 9, 9, generator=torch.Generator().manual_seed(8))
    assert is_differentiable(attackable) and isinstance(attackable[1], BPDA)
    assert torch.equal(attackable(x), chain(x))
    with pytest.raises(InputError, match="expected a defense"):
        bpda(nn.ModuleDict({"m": MedianBlur(3)}))
    with pytest.raises(InputError, match="surrogate"):
        BPDA(nn.ReLU())
    with pytest.raises(InputError, match="expected an nn.Module"):
        Defended(lambda x: x, nn.Identity())  # type: ignore[arg-type]


def test_registry_flags() -> None:
    classes = {"gaussian-blur": GaussianBlur, "median-blur": MedianBlur, "jpeg": JPEG, "bit-depth": BitDepth}
    for name, cls in classes.items():
        meta = DEFENSES.meta(name)
        assert DEFENSES.get(name).target is cls and meta["kind"] == "preprocess" and meta["random"] is False
        module = cls(**meta["params"])
        assert meta["differentiable"] is module.differentiable and module.random is False
        assert "arXiv" in meta["paper"] or "seeds" in meta["paper"]
    assert [n for n in classes if DEFENSES.meta(n)["differentiable"]] == ["gaussian-blur"]


@pytest.mark.parametrize("make", [
    lambda: GaussianBlur(-1.0), lambda: GaussianBlur(float("nan")), lambda: GaussianBlur(math.inf),
    lambda: GaussianBlur("1"), lambda: GaussianBlur(1.0, kernel_size=4), lambda: MedianBlur(2),
    lambda: MedianBlur(0), lambda: MedianBlur(3.0), lambda: MedianBlur(True), lambda: JPEG(0), lambda: JPEG(101),
    lambda: JPEG(50.0), lambda: BitDepth(0), lambda: BitDepth(9), lambda: quant_table(0),
    lambda: GaussianBlur(1.0)(torch.rand(3, 8, 8)), lambda: MedianBlur(3)(torch.zeros(1, 1, 8, 8, dtype=torch.int64)),
    lambda: JPEG(75)(torch.rand(1, 2, 8, 8)), lambda: BitDepth(3)([[0.5]]),
])
def test_bad_arguments_raise_one_line(make) -> None:  # noqa: ANN001
    with pytest.raises(InputError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message and "expected" in message and "got" in message


def test_the_runner_attacks_a_non_differentiable_defense_through_bpda():
    from conftest import tiny_cnn
    from sparring.evaluate import AttackSpec, evaluate
    torch.manual_seed(0)
    net = tiny_cnn().eval()
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = net(x).argmax(1).detach()
    spec = AttackSpec("pgd", "linf", (("0.3", 0.3),), params={"steps": 10})
    raw = Defended(BitDepth(1), net)  # true gradient: zero everywhere
    bpda_records = evaluate(raw, x, y, [spec], seed=0)
    masked = nn.Sequential(BitDepth(1), net)  # no for_attack(): the attack sees the zero gradient
    masked_records = evaluate(masked, x, y, [spec], seed=0)
    cell = lambda recs: next(r for r in recs if r.get("attack") == "pgd")  # noqa: E731
    assert cell(bpda_records)["robust_accuracy"] < cell(masked_records)["robust_accuracy"]
