"""The gradient-masking audit: checks with pass / warn / fail and their evidence, then, when a check
finds masking, an adaptive re-run (BPDA, EOT, margin loss, more restarts) reported beside the naive one.

Athalye, Carlini, Wagner 2018 (arXiv:1802.00420) and Carlini et al. 2019, "On evaluating adversarial
robustness" (arXiv:1902.06705) list the symptoms checked here: single-step beats iterative, black-box
beats white-box, an unbounded attack does not reach 0%, accuracy rises with eps, zero or NaN
gradients, randomness, non-differentiable layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import eot, fgsm, pgd, square
from ..attacks.losses import margin
from ..defenses import is_differentiable, is_random
from ..errors import InputError
from ..precision import with_exact_float32
from ..rng import SampleGenerators, derive
from ..threat import Norm, ThreatModel
from .masking import attackable, zero_gradient_layers
from .runner import predict
from .specs import choose_targets

__all__ = ["audit"]


def _check(name: str, status: str, evidence: str, cause: str = "", fix: str = "") -> dict[str, str]:
    return {"name": name, "status": status, "evidence": evidence, "cause": cause, "fix": fix}


def _predict(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    return predict(model, x, batch_size, x.device).argmax(1).to(x.device)


def _symptom(checks: list[dict[str, str]], fixes: set[str], name: str, bad: bool, evidence: str, cause: str,
             fix: str, needs: set[str], status: str = "fail") -> None:
    """Append a check that is `status` when `bad` (with its cause and fix, and `needs` added to fixes), else pass."""
    checks.append(_check(name, status if bad else "pass", evidence, cause if bad else "", fix if bad else ""))
    if bad:
        fixes |= needs


def _chunked(run: Any, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """run(x_chunk, y_chunk, sample indices) over x in chunks, outputs detached and concatenated."""
    return torch.cat([run(x[i : i + batch_size], y[i : i + batch_size], range(i, min(i + batch_size, len(x)))).detach()
                      for i in range(0, len(x), batch_size)])


def _static_checks(model: nn.Module, x: Tensor, y: Tensor,
                   threat: ThreatModel) -> tuple[list[dict[str, str]], set[str]]:
    checks, fixes = [], set()
    lo, hi = threat.bounds
    xb = x[: min(len(x), 32)]
    training = [n for n, m in model.named_modules() if m.training]
    checks.append(_check("eval mode", "fail" if training else "pass",
                         f"{len(training)} modules in training mode" if training else "every module in eval mode",
                         "dropout / batch norm in training mode change the function under attack" if training else ""))
    inside = bool(((x >= lo) & (x <= hi)).all())
    checks.append(_check("inputs within bounds", "pass" if inside else "fail",
                         f"pixels in [{float(x.min()):.3g}, {float(x.max()):.3g}], bounds [{lo}, {hi}]"))
    with torch.no_grad():
        a, b = model(xb), model(xb)
        single = torch.cat([model(xb[i : i + 1]) for i in range(min(len(xb), 4))])
    random = is_random(model) or not torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    if random:
        declared = is_random(model)
        checks.append(_check("randomness", "fail", f"two forward passes of the same batch differ by up to "
                             f"{float((a - b).abs().max()):.3g}" + ("" if declared else " (not declared)"),
                             "a random model: one draw's gradient is noise", "EOT over the randomness"))
        fixes.add("eot")
    else:
        gap = float((single - a[: len(single)]).abs().max())
        checks.append(_check("randomness", "pass", "two forward passes agree"))
        checks.append(_check("batch-size invariance", "pass" if gap <= 1e-3 * (1 + float(a.abs().max())) else "warn",
                             f"batch of 1 vs {len(xb)}: logits differ by up to {gap:.3g}"))
    probs = bool((a >= 0).all() and (a <= 1).all() and torch.allclose(a.sum(1), torch.ones(len(a)), atol=1e-3))
    checks.append(_check("outputs are logits", "fail" if probs else "pass",
                         "rows are in [0, 1] and sum to 1" if probs
                         else f"logits in [{float(a.min()):.3g}, {float(a.max()):.3g}]",
                         "the model returns probabilities: cross-entropy on them saturates" if probs else "",
                         "margin loss" if probs else ""))
    if probs:
        fixes.add("margin")
    if not is_differentiable(model):
        checks.append(_check("non-differentiable layers", "fail", "a defense declares differentiable = False",
                             "gradients through it are wrong or zero", "BPDA with its declared surrogate"))
        fixes.add("bpda")
    else:
        checks.append(_check("non-differentiable layers", "pass", "none declared"))
    return checks, fixes


def _gradient_checks(model: nn.Module, x: Tensor, y: Tensor) -> tuple[list[dict[str, str]], set[str]]:
    checks, fixes = [], set()
    xb, yb = x[: min(len(x), 32)].clone().requires_grad_(True), y[: min(len(x), 32)]
    with torch.enable_grad():
        logits = model(xb)
        (g_ce,) = torch.autograd.grad(nn.functional.cross_entropy(logits, yb, reduction="sum"), xb)
        xb2 = xb.detach().clone().requires_grad_(True)
        z = model(xb2)
        (g_m,) = torch.autograd.grad(margin(z, yb, False).sum(), xb2)
    nan = int((~torch.isfinite(g_ce)).flatten(1).any(1).sum())
    zero_ce = int((g_ce.flatten(1).abs().amax(1) == 0).sum())
    zero_m = int((g_m.flatten(1).abs().amax(1) == 0).sum())
    layers = zero_gradient_layers(model, xb.detach())
    n = len(xb)
    if nan or zero_m > n // 2 or layers:
        named = [f"{name} ({type(model.get_submodule(name)).__name__})" for name in layers]
        where = f"; layers passing back no gradient: {', '.join(named)}" if layers else ""
        checks.append(_check("input gradients", "fail", f"{nan} of {n} samples with NaN, {zero_m} with an all-zero "
                             f"margin gradient{where}", "a layer hides the gradient (rounding, quantization, detach)",
                             "BPDA with the identity through the layers found"))
        fixes.add("bpda")
    elif zero_ce > n // 10:
        checks.append(_check("input gradients", "fail", f"cross-entropy gradient exactly 0 on {zero_ce} of {n} "
                             f"samples, margin gradient non-zero on {n - zero_m}",
                             "saturated softmax (e.g. distillation at a high temperature): CE gradients underflow",
                             "margin (CW) loss on the logits"))
        fixes.add("margin")
    else:
        checks.append(_check("input gradients", "pass", f"non-zero and finite on {n - zero_ce} of {n} samples"))
    return checks, fixes


def _attack(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, steps: int, restarts: int = 1,
            loss: str = "ce", random: bool = False, draws: int = 10, seed: int = 0, batch_size: int = 256) -> Tensor:
    """PGD in chunks with per-sample streams; on a random model, EOT over `draws` draws per step and
    every step on every sample (a restart is a fresh run kept where the first one failed)."""
    run = eot(pgd, "none", draws=draws) if random else pgd
    outs = []
    for i in range(0, len(x), batch_size):
        xs, ys, rows = x[i : i + batch_size], y[i : i + batch_size], range(i, min(i + batch_size, len(x)))
        if not random:
            outs.append(pgd(model, xs, ys, threat=threat, steps=steps, loss=loss, restarts=restarts,
                            generator=SampleGenerators(seed, rows)).detach())
            continue
        best = run(model, xs, ys, threat=threat, steps=steps, loss=loss, early_stop=False,
                   generator=SampleGenerators(seed, rows)).detach()
        for r in range(1, restarts):
            with torch.no_grad():
                left = model(best).argmax(1) == ys
            if not bool(left.any()):
                break
            again = run(model, xs, ys, threat=threat, steps=steps, loss=loss, early_stop=False,
                        generator=SampleGenerators(derive(seed, "audit restart", r), rows)).detach()
            best = torch.where(left[:, None, None, None], again, best)
        outs.append(best)
    return torch.cat(outs)


@with_exact_float32  # IEEE float32 and deterministic kernels on a GPU, as the runner's attacks
def audit(model: nn.Module, x: Tensor, y: Tensor, *, threat: ThreatModel, eps: Sequence[float] | None = None,
          steps: int = 20, restarts: int = 1, square_queries: int = 500, surrogate: nn.Module | None = None,
          adaptive: bool | None = None,
          eot_draws: int = 10, seed: int = 0, batch_size: int = 256) -> dict[str, Any]:
    """Audit the robustness evaluation of `model` on (x, y) under `threat` (its eps is the largest).

    Checks (each pass / warn / fail / skip with its evidence, cause and fix): eval mode; inputs within bounds;
    randomness (then EOT); batch-size invariance; logits, not probabilities; declared non-differentiable
    layers (then BPDA); zero / NaN input gradients and layers that hide them (then BPDA with the identity);
    a saturated softmax (then the margin loss); robust accuracy non-increasing in eps; iterative no weaker
    than single-step per sample; an unbounded attack reaches chance; convergence (twice the steps and twice
    the restarts, at least 2, move accuracy < 0.5 points); Square (black-box) and transfer from `surrogate` never beat
    white-box per sample (more than 1% of the samples fooled by them and by neither PGD run fails); examples
    still adversarial after 8-bit rounding; targets never the true label.
    The naive attack is PGD with `steps` steps and `restarts` restarts (the evaluation being audited).
    When a check fails for a masking cause (adaptive=None) or always (adaptive=True), PGD is re-run with the
    fixes found: BPDA (declared surrogates, identity through zero-gradient layers), EOT over `eot_draws`
    draws, margin loss, 3 restarts and twice the steps. Returns {"checks", "eps", "naive", "adaptive",
    "changes", "verdict"}: naive/adaptive map eps -> robust accuracy (adaptive: per sample, robust to both).
        >>> report = audit(model, x, y, threat=ThreatModel(Norm.LINF, 0.3), eps=[0.1, 0.2, 0.3])
        >>> report["verdict"], report["adaptive"]
    """
    if len(x) != len(y) or not len(x):
        raise InputError(f"expected as many labels as images (>= 1), got {len(x)} images and {len(y)} labels")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise InputError(f"expected restarts to be an integer >= 1, got {restarts!r}")
    eps = sorted({float(e) for e in (eps or [threat.eps])} | {float(threat.eps)})
    model = model.eval()
    checks, fixes = _static_checks(model, x, y, threat)
    grad_checks, grad_fixes = _gradient_checks(model, x, y)
    checks += grad_checks
    fixes |= grad_fixes
    random, n = "eot" in fixes, len(x)
    # Every prediction below is a fresh forward pass: on a random model each one is a new draw, part of
    # what the audit measures (and of its random stream), so none is reused from an earlier pass.
    clean = _predict(model, x, batch_size) == y
    k = int(model(x[:1]).shape[1])
    naive, naive_adv = {}, {}
    for e in eps:
        t = ThreatModel(threat.norm, e, threat.bounds)
        naive_adv[e] = _attack(model, x, y, t, steps=steps, restarts=restarts, seed=seed, batch_size=batch_size)
        naive[e] = float((clean & (_predict(model, naive_adv[e], batch_size) == y)).float().mean())
    last_adv = naive_adv[threat.eps]
    fooled_pgd = ~(clean & (_predict(model, last_adv, batch_size) == y))
    values = [naive[e] for e in eps]
    rises = [f"{a:g} -> {b:g}" for a, b, ra, rb in zip(eps, eps[1:], values, values[1:]) if rb > ra + 1.0 / n]
    _symptom(checks, fixes, "non-increasing in eps", bool(rises),
             "robust accuracy " + ", ".join(f"{100 * v:.1f}%" for v in values) + f" at eps {eps}",
             "accuracy rises with eps: the attack is not finding its way", "more restarts, margin loss",
             {"margin", "restarts"})
    x_f = _chunked(lambda xs, ys, rows: fgsm(model, xs, ys, threat=threat), x, y, batch_size)
    only_fgsm = int((clean & (_predict(model, x_f, batch_size) != y) & ~fooled_pgd).sum())
    _symptom(checks, fixes, "iterative no weaker than single-step", only_fgsm > max(1, n // 200),
             f"{only_fgsm} samples fooled by FGSM but not by PGD-{steps}", "the loss surface is masked near the input",
             "margin loss, restarts", {"margin", "restarts"})
    lo, hi = threat.bounds
    big = (hi - lo) if threat.norm is Norm.LINF else (hi - lo) * math.sqrt(x[0].numel())
    x_big = _attack(model, x, y, ThreatModel(threat.norm, big, threat.bounds), steps=steps,
                    seed=derive(seed, "audit", "unbounded"), batch_size=batch_size, random=random, draws=eot_draws)
    acc_big = float((clean & (_predict(model, x_big, batch_size) == y)).float().mean())
    _symptom(checks, fixes, "unbounded attack reaches chance", acc_big > 1.0 / k + 0.05,
             f"{100 * acc_big:.1f}% robust at eps {big:.3g} (the whole box), chance {100 / k:.1f}%",
             "even an unlimited perturbation does not fool the model: gradients are masked", "BPDA, margin loss",
             {"margin", "restarts"})
    more = max(2, 2 * restarts)
    x_long = _attack(model, x, y, threat, steps=2 * steps, restarts=more, seed=derive(seed, "audit", "convergence"),
                     batch_size=batch_size)
    fooled_white = fooled_pgd | (_predict(model, x_long, batch_size) != y)  # by either white-box run
    acc_long = float((clean & ~fooled_white).float().mean())
    _symptom(checks, fixes, "convergence", naive[threat.eps] - acc_long > 0.005,
             f"PGD-{2 * steps} x {more} restarts: {100 * acc_long:.1f}% against {100 * naive[threat.eps]:.1f}% "
             f"for PGD-{steps}" + (f" x {restarts} restarts" if restarts > 1 else ""),
             "the attack has not converged", "more steps and restarts", {"restarts"}, status="warn")
    x_sq = _chunked(lambda xs, ys, rows: square(model, xs, ys, threat=threat, queries=square_queries,
                                                generator=SampleGenerators(derive(seed, "audit", "square"), rows)),
                   x, y, batch_size)
    only_sq = int((clean & (_predict(model, x_sq, batch_size) != y) & ~fooled_white).sum())
    _symptom(checks, fixes, "black-box no better than white-box", only_sq > max(1, n // 100),
             f"{only_sq} samples fooled by Square ({square_queries} queries) but by neither PGD-{steps} "
             f"nor PGD-{2 * steps} x {more} restarts", "gradients mislead the white-box attack",
             "BPDA, EOT, margin loss",
             {"margin", "restarts"})
    if surrogate is not None:
        x_t = _attack(surrogate.eval(), x, y, threat, steps=steps, seed=derive(seed, "audit", "transfer"),
                      batch_size=batch_size)
        only_t = int((clean & (_predict(model, x_t, batch_size) != y) & ~fooled_white).sum())
        _symptom(checks, fixes, "transfer no better than white-box", only_t > max(1, n // 100),
                 f"{only_t} samples fooled by examples crafted on the surrogate but by no white-box run",
                 "gradients mislead the white-box attack", "BPDA, margin loss", {"margin", "restarts"})
    rounded = (last_adv * 255).round() / 255
    was = clean & fooled_pgd
    if random:
        checks.append(_check("still adversarial after 8-bit rounding", "skip",
                             "a random model: a re-evaluation is a fresh draw, not a test of the rounding"))
    else:
        lost = int((was & (_predict(model, rounded.clamp(lo, hi), batch_size) == y)).sum())
        checks.append(_check("still adversarial after 8-bit rounding",
                             "warn" if lost > max(1, int(was.sum()) // 20) else "pass",
                             f"{lost} of {int(was.sum())} examples are no longer adversarial as 8-bit images (PNG); "
                             "sparring saves float tensors"))
    logits = predict(model, x, batch_size, x.device).to(x.device)
    same = sum(int((choose_targets(logits, y, mode, seed, torch.arange(n)) == y).sum())
               for mode in ("random", "least-likely", "next"))
    checks.append(_check("targets never the true label", "pass" if same == 0 else "fail",
                         f"{same} targets equal to the label over random, least-likely and next"))
    masked = any(c["status"] == "fail" for c in checks)
    result: dict[str, Any] = {"checks": checks, "eps": eps, "naive": naive, "adaptive": None, "changes": [],
                              "verdict": "fail" if masked else
                              ("warn" if any(c["status"] == "warn" for c in checks) else "pass")}
    if adaptive is False or (adaptive is None and not fixes):
        return result
    target, changes = attackable(model, x[: min(n, 32)]) if "bpda" in fixes or adaptive else (model, [])
    loss = "margin" if fixes & {"margin", "bpda", "restarts"} or adaptive else "ce"
    again = max(3, restarts) if "restarts" in fixes or adaptive else restarts
    changes += [f"loss {loss}", f"{2 * steps} steps", f"{again} restarts"]
    changes += [f"EOT over {eot_draws} draws"] if random else []
    out = {}
    for e in eps:
        t = ThreatModel(threat.norm, e, threat.bounds)
        x_adv = _attack(target, x, y, t, steps=2 * steps, restarts=again, loss=loss, random=random,
                        draws=eot_draws, seed=derive(seed, "audit", "adaptive"), batch_size=batch_size)
        both = clean & (_predict(model, x_adv, batch_size) == y) & (_predict(model, naive_adv[e], batch_size) == y)
        if e == threat.eps:  # the black-box examples were made at this eps: robust only if robust to all
            both &= _predict(model, x_sq, batch_size) == y
        out[e] = float(both.float().mean())
    result.update(adaptive=out, changes=changes)
    return result
