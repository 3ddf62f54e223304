"""Square Attack (Andriushchenko et al. 2020, arXiv:1912.00049): random search over square-shaped
updates, forward passes only. Each sample stops (and is never queried again) once fooled.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..rng import Generators, subset, uniform
from ..threat import Norm, ThreatModel
from .checks import check_batch, check_labels, check_positive, check_positive_int
from .losses import get_loss, is_adversarial
from .registry import ATTACKS

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def side(p_init: float, it: int, height: int, width: int, least: int = 1) -> int:
    """Square side at iteration `it`: sqrt(p * H * W), p halved after each of the paper's HALVINGS."""
    p = p_init / 2 ** sum(it > t for t in HALVINGS)
    return max(min(round(math.sqrt(p * height * width)), height, width), min(least, height, width))


@functools.lru_cache(maxsize=64)
def _mountain(a: int, b: int) -> Tensor:
    """Concentric pattern of Eq. (2): level L (0 at the border) weighs sum_{k<=L} 1 / (n + 1 - k)^2."""
    r, c = torch.arange(a)[:, None], torch.arange(b)[None, :]
    level = torch.minimum(torch.minimum(r, a - 1 - r), torch.minimum(c, b - 1 - c))
    n = int(level.max())
    weights = torch.cumsum(1.0 / (n + 1 - torch.arange(n + 1, dtype=torch.float64)) ** 2, 0)
    return weights[level].float()


@functools.lru_cache(maxsize=64)
def _pattern(s: int) -> Tensor:
    """The L2 update pattern: two halves of the square with opposite signs, unit L2 norm."""
    top = s // 2
    parts = [_mountain(top, s)] if top else []
    pat = torch.cat(parts + [-_mountain(s - top, s)])
    return pat / pat.norm()


def _window(u_row: Tensor, u_col: Tensor, s: int, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    r = (u_row * (h - s + 1)).long().clamp_max(h - s)
    c = (u_col * (w - s + 1)).long().clamp_max(w - s)
    rows = torch.arange(h, device=r.device)[None]
    cols = torch.arange(w, device=r.device)[None]
    inside_r = (rows >= r[:, None]) & (rows < r[:, None] + s)
    inside_c = (cols >= c[:, None]) & (cols < c[:, None] + s)
    return inside_r[:, None, :, None] & inside_c[:, None, None, :], r, c


def _linf_init(x: Tensor, eps: float, gen: Generators, threat: ThreatModel) -> Tensor:
    signs = torch.where(uniform(gen, x[:, :, :1, :]) < 0.5, -1.0, 1.0).to(x.dtype)
    return threat.clamp(x + eps * signs)


def _l2_init(x: Tensor, eps: float, gen: Generators, threat: ThreatModel) -> Tensor:
    n, ch, h, w = x.shape
    t = max(min(h, w) // 5, 1)
    signs = torch.where(uniform(gen, x[:, :, : h // t, : w // t]) < 0.5, -1.0, 1.0).to(x.dtype)
    tiles = signs.repeat_interleave(t, 2).repeat_interleave(t, 3) * _mountain(t, t).to(x).repeat(h // t, w // t)
    delta = torch.zeros_like(x)
    delta[:, :, : tiles.shape[2], : tiles.shape[3]] = tiles
    delta = delta * eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
    return threat.project(x + delta, x)


def _linf_propose(x: Tensor, cur: Tensor, s: int, eps: float, gen: Generators, threat: ThreatModel) -> Tensor:
    """Set an s x s window of every channel to x +- eps, with a sign vector that changes `cur`.

    The paper redraws the signs until the proposal differs from the current point. At most one
    of the 2**C sign vectors leaves the window as it is, so the redraw loop is replaced by one
    uniform draw over the other vectors: the same distribution, no host sync (eps > 0).
    """
    n, ch, h, w = x.shape
    u = uniform(gen, x.new_empty(n, 3))
    mask, _, _ = _window(u[:, 0], u[:, 1], s, h, w)
    up, down = threat.clamp(x + eps), threat.clamp(x - eps)
    keeps_up = ((up == cur) | ~mask).flatten(2).all(dim=2)  # (n, C): sign +1 leaves channel c as it is
    keeps_down = ((down == cur) | ~mask).flatten(2).all(dim=2)
    stuck = (keeps_up | keeps_down).all(dim=1)  # some sign vector changes nothing
    bit = 2 ** torch.arange(ch, device=x.device)
    stuck_code = (keeps_up.long() * bit).sum(dim=1)  # bit c set: sign +1 in channel c
    choices = 2**ch - stuck.long()
    code = torch.minimum((u[:, 2].double() * choices).long(), choices - 1)
    code = code + (stuck & (code >= stuck_code)).long()  # skip the vector that changes nothing
    plus = (code[:, None] & bit).bool()[:, :, None, None]
    return torch.where(mask, torch.where(plus, up, down), cur)


def _l2_propose(x: Tensor, cur: Tensor, s: int, eps: float, gen: Generators, threat: ThreatModel) -> Tensor:
    n, ch, h, w = x.shape
    u = uniform(gen, x.new_empty(n, 5 + ch))
    mask1, r1, c1 = _window(u[:, 0], u[:, 1], s, h, w)
    mask2, _, _ = _window(u[:, 2], u[:, 3], s, h, w)
    pat = _pattern(s).to(x)
    pats = torch.where((u[:, 4] < 0.5)[:, None, None], pat, pat.T)
    eta = torch.zeros(n, 1, h, w, device=x.device, dtype=x.dtype)
    ar = torch.arange(s, device=x.device)
    rows, cols = (r1[:, None] + ar)[:, :, None], (c1[:, None] + ar)[:, None, :]
    eta[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols] = pats
    nu = cur - x
    both = mask1 | mask2
    unused = (eps**2 - nu.flatten(1).pow(2).sum(1)).clamp_min(0)
    in1 = nu * mask1
    n1 = in1.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None]
    avail = ((nu * both).flatten(2).pow(2).sum(2) + unused[:, None] / ch).sqrt()[:, :, None, None]
    signs = torch.where(u[:, 5:] < 0.5, -1.0, 1.0).to(x.dtype)[:, :, None, None]
    temp = signs * eta + in1 / n1
    temp = temp / temp.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None] * avail
    return threat.project(x + torch.where(both, 0.0, nu) + temp * mask1, x)


def square_batch(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, queries: int, p_init: float,
                 targeted: bool, generator: Generators) -> tuple[Tensor, Tensor]:
    """Square Attack on (x, y); returns (points, fooled flags). At most `queries` forwards per sample."""
    objective = get_loss("ce" if targeted else "margin")  # maximized: -CE(target), or max_other - z_y
    l2 = threat.norm is Norm.L2
    h, w = x.shape[2], x.shape[3]
    with torch.no_grad():
        out = (_l2_init if l2 else _linf_init)(x, threat.eps, generator, threat)
        logits = model(out)
        check_labels(y, logits.shape[1])
        loss, hit = objective(logits, y, targeted), is_adversarial(logits, y, targeted)
        act = (~hit).nonzero().flatten()
        cur, best, gen = out[act], loss[act], subset(generator, ~hit)
        xs, ys = x[act], y[act]
        for it in range(queries - 1):
            if act.numel() == 0:
                break
            s = side(p_init, it, h, w, least=3 if l2 else 1)
            new = (_l2_propose if l2 else _linf_propose)(xs, cur, s, threat.eps, gen, threat)
            logits = model(new)
            value = objective(logits, ys, targeted)
            # untargeted: a positive margin means another class strictly wins, so argmax != y
            fooled = is_adversarial(logits, ys, targeted) if targeted else value > 0
            take = (value > best) | fooled
            cur = torch.where(take[:, None, None, None], new, cur)
            best = torch.where(take, value, best)
            if bool(fooled.any()):  # the only host sync of an iteration where nothing needs a redraw
                out[act[fooled]], hit[act[fooled]] = cur[fooled], True
                keep = ~fooled
                act, cur, best, gen = act[keep], cur[keep], best[keep], subset(gen, keep)
                xs, ys = x[act], y[act]
        out[act] = cur
    return out, hit


@ATTACKS.register("square", kind="blackbox", norms=("linf", "l2"), needs_grad=False, targeted="optional",
                  paper="Andriushchenko et al. 2020, arXiv:1912.00049", test_params={"queries": 50},
                  finite_eps=True)
def square(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, queries: int = 5000,
           p_init: float = 0.8, targeted: bool = False, generator: Generators = None) -> Tensor:
    """Square Attack: random search with square updates at the boundary of the Linf / L2 ball.

    Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
    adversarial attack via random search", arXiv:1912.00049. Minimizes the logit margin
    (untargeted) or the cross-entropy of the target (targeted); p_init is the initial fraction of
    pixels a square covers (halved on the paper's schedule); `queries` counts every forward pass
    of a sample, the initial one included; fooled samples are not queried again.
        >>> x_adv = square(model, x, y, threat=ThreatModel(Norm.LINF, 0.3), queries=1000, generator=g)
    """
    check_batch(x, y, threat)
    if x.dim() != 4:
        raise InputError(f"square expects images of shape (B, C, H, W), got {tuple(x.shape)}")
    if threat.norm not in (Norm.LINF, Norm.L2):
        raise InputError(f"square supports norms linf and l2, got {threat.norm.value}")
    check_positive_int("queries", queries)
    p_init = check_positive("p_init", p_init)
    if p_init > 1:
        raise InputError(f"p_init must be in (0, 1], got {p_init}")
    x, y = x.detach(), y.to(device=x.device, dtype=torch.int64)
    return square_batch(model, x, y, threat=threat, queries=queries, p_init=p_init, targeted=targeted,
                        generator=generator)[0]


__all__ = ["side", "square", "square_batch"]
