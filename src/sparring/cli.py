"""The sparring command line. Every SparringError becomes one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .errors import ConfigError, SparringError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    from .config import parse_eps

    if re.fullmatch(r"[0-9.]+\s*/\s*[0-9.]+", text):  # a fraction like 8/255; other text (paths) stays text
        return parse_eps(text)[1]
    return text


def parse_attack(text: str) -> tuple[str, dict[str, Any]]:
    """"pgd:steps=20,restarts=2,loss=margin" -> ("pgd", {...}); defenses use the same syntax."""
    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"expected attack options as key=value, got {item!r} in {text!r}")
        params[key.strip().replace("-", "_")] = _value(val.strip())
    return name.strip(), params


def _say(*parts: Any) -> None:
    """Progress and notes for the user: stderr, flushed (stdout stays for results and --json)."""
    print(*parts, file=sys.stderr, flush=True)


def _eps_list(values: list[str]) -> tuple[str, ...]:
    from .config import parse_eps

    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    for v in out:
        parse_eps(v)
    return tuple(out)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder with the datasets (default: $SPARRING_DATA or ../shared/data)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=0)


def _model_args(p: argparse.ArgumentParser, model_help: str = "architecture, pretrained alias, or saved model path",
                dataset_help: str | None = None) -> None:
    """--dataset, --model, --weights, --weights-dir: a trained model to evaluate, attack or measure."""
    p.add_argument("--dataset", default="digits", help=dataset_help)
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--weights", default="", help="weights file or pretrained alias for --model")
    p.add_argument("--weights-dir", default=None, help="folder with pretrained files (default $SPARRING_WEIGHTS)")


def _speed_args(p: argparse.ArgumentParser) -> None:
    """Training speed opt-ins (sparring.precision); measured in docs/training-speed.md."""
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="mixed precision for training: autocast to bf16 or fp16 (gradient scaler); default fp32")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for training")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training")


def _resume_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command: while training, OUT.partial.* holds the "
                        "latest epoch and its training state (distillation also OUT.partial.teacher.*); they are "
                        "removed once the model is saved at OUT. Without them, train from scratch. Without "
                        "--resume they are overwritten. The settings and the number of torchrun processes must "
                        "match the interrupted run")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparring", description="Attack, defend and audit image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ls = sub.add_parser("list", help="registered datasets, models, pretrained weights, attacks, defenses")
    ls.add_argument("what", nargs="?", default="all", choices=["all", "datasets", "models", "pretrained", "attacks", "defenses"])
    t = sub.add_parser("train", help="train a model on a dataset and save it (safetensors + json)")
    t.add_argument("--dataset", default="digits")
    t.add_argument("--model", default="digits-cnn")
    t.add_argument("--out", required=True, help="path stem of the saved model, e.g. models/digits")
    for flag, kind, default in [("--epochs", int, 30), ("--batch-size", int, 64), ("--lr", float, 0.002),
                                ("--momentum", float, 0.9), ("--weight-decay", float, 0.0)]:
        t.add_argument(flag, type=kind, default=default)
    t.add_argument("--optimizer", default="adam", help="sgd or adam")
    t.add_argument("--schedule", default="cosine", help="cosine, step, onecycle or none")
    t.add_argument("--augment", default="none", help="none, crop or crop-flip")
    _resume_arg(t)
    _speed_args(t)
    _common(t)
    d = sub.add_parser("defend", help="apply defenses (training recipes, filters, noise) and save the defended model")
    d.add_argument("--dataset", default="digits")
    d.add_argument("--model", default="digits-cnn", help="architecture, or a saved model path to start from")
    d.add_argument("--defense", action="append", default=[], help="NAME[:key=value,...], repeatable, e.g. pgd-at:steps=7")
    d.add_argument("--out", required=True, help="path stem of the saved model, e.g. models/digits-pgd")
    d.add_argument("--eps", default=None, help="budget of an adversarial-training recipe, e.g. 0.3 or 8/255")
    d.add_argument("--norm", default="linf", help="l1, l2 or linf (adversarial training)")
    for flag, kind, default in [("--epochs", int, 10), ("--batch-size", int, 64), ("--lr", float, 0.002),
                                ("--momentum", float, 0.9), ("--weight-decay", float, 0.0)]:
        d.add_argument(flag, type=kind, default=default)
    d.add_argument("--optimizer", default="adam", help="sgd or adam")
    d.add_argument("--schedule", default=None, help="cosine, step, onecycle or none (default: the recipe's)")
    d.add_argument("--augment", default="none", help="none, crop or crop-flip (training recipes)")
    _resume_arg(d)
    _speed_args(d)
    _common(d)
    e = sub.add_parser("evaluate", help="clean and robust accuracy of one model under attacks")
    _model_args(e)
    e.add_argument("--attack", action="append", default=[], help="NAME[:key=value,...], repeatable")
    e.add_argument("--eps", action="append", default=[], help="epsilons, e.g. 8/255 or 0.1,0.2 (repeatable)")
    e.add_argument("--norm", default="linf", help="l1, l2 or linf")
    e.add_argument("--targeted", action="store_true", help="targeted attacks (target picked by --target)")
    e.add_argument("--target", default="random", help="random, least-likely or next")
    e.add_argument("--attack-precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast the attacks (default fp32; reduced precision can understate an attack)")
    e.add_argument("--inputs", default=None, help="your own images instead of the test split: .npz (x, y) or .pt")
    e.add_argument("--n", "--first", dest="n", type=int, default=0,
                   help="first N test images (0 = all); under torchrun write --first (torchrun takes --n as its own)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--out", default=None, help="also write a run folder with results and report")
    _common(e)
    f = sub.add_parser("fool", help="fooling images: noise or blank driven to chosen classes (false positives)")
    _model_args(f, dataset_help="gives the image shape and the class names")
    f.add_argument("--classes", default="all", help="target classes: all, or indices such as 0,3,7")
    f.add_argument("--start", default="noise", help="noise, blank or zeros")
    f.add_argument("--steps", type=int, default=500)
    f.add_argument("--step-size", type=float, default=0.01)
    f.add_argument("--confidence", type=float, default=0.99, help="stop once p(target) reaches this")
    f.add_argument("--out", default=None, help="folder for fooling.pt and fooling.png")
    _common(f)
    dt = sub.add_parser("detect", help="train or build a detector of adversarial inputs and measure it (ROC AUC, "
                        "detection at a false-positive rate, and a joint attack on classifier + detector)")
    _model_args(dt)
    dt.add_argument("--detector", default="binary-detector",
                    help="binary-detector[:layer=...,hidden=64,epochs=10,train=5000], feature-squeezing[:bits=5,"
                         "window=3] or reconstruction-detector[:epochs=20,noise=0.1,width=16,p=1]")
    dt.add_argument("--attack", default="pgd:steps=40", help="NAME[:key=value,...]: the attack detected (and trained on)")
    dt.add_argument("--eps", required=True, help="attack budget, e.g. 0.3 or 8/255")
    dt.add_argument("--norm", default="linf", help="l1, l2 or linf")
    dt.add_argument("--fpr", type=float, default=0.05, help="false-positive rate on clean images that sets the threshold")
    dt.add_argument("--no-joint", action="store_true", help="skip the joint attack on classifier + detector")
    dt.add_argument("--n", type=int, default=500, help="first N test images")
    dt.add_argument("--batch-size", type=int, default=256)
    dt.add_argument("--json", action="store_true", help="print one JSON object")
    _common(dt)
    ce = sub.add_parser("certify", help="certified L2 accuracy of randomized smoothing (Cohen et al. 2019)")
    _model_args(ce, "the base classifier: architecture, pretrained alias, or saved "
                    "model (one from `defend --defense randomized-smoothing` brings its sigma)")
    ce.add_argument("--sigma", type=float, default=None, help="noise std (default: the model's training sigma)")
    ce.add_argument("--radii", default="0,0.25,0.5,0.75,1", help="L2 radii, comma-separated")
    ce.add_argument("--n0", type=int, default=100, help="noisy draws that pick the class")
    ce.add_argument("--samples", type=int, default=10_000, help="noisy draws that bound its probability (n)")
    ce.add_argument("--alpha", type=float, default=0.001, help="failure probability of a certificate")
    ce.add_argument("--n", type=int, default=200, help="first N test images")
    ce.add_argument("--batch-size", type=int, default=1000, help="noisy images per forward pass")
    ce.add_argument("--json", action="store_true", help="print one JSON object")
    _common(ce)
    au = sub.add_parser("audit", help="check an evaluation for gradient masking; re-run adaptively (BPDA, EOT, "
                        "margin loss, restarts) when a check fails")
    _model_args(au)
    au.add_argument("--defense", action="append", default=[], help="a module defense put on the model first, "
                    "e.g. median-blur:window=3 or gaussian-noise:sigma=0.1 (repeatable)")
    au.add_argument("--planted", default=None, help="wrap the model in a deliberately broken defense: quantization, "
                    "gradient-killer, noise or median (to see the audit catch it)")
    au.add_argument("--eps", required=True, help="epsilons, e.g. 0.05,0.1 (the largest is the main one)")
    au.add_argument("--norm", default="linf", help="l1, l2 or linf")
    au.add_argument("--n", type=int, default=200, help="first N test images")
    au.add_argument("--steps", type=int, default=20, help="PGD steps of the naive attack (adaptive: twice)")
    au.add_argument("--restarts", type=int, default=1, help="PGD restarts of the naive attack (convergence: twice)")
    au.add_argument("--square-queries", type=int, default=500)
    au.add_argument("--surrogate", default=None, help="a model to transfer from (trained: saved model or alias)")
    au.add_argument("--adaptive", default="auto", choices=["auto", "always", "never"])
    au.add_argument("--batch-size", type=int, default=256)
    au.add_argument("--json", action="store_true", help="print one JSON object")
    _common(au)
    r = sub.add_parser("run", help="the experiment: train or load, evaluate, report")
    r.add_argument("config", nargs="?", default=None, help="TOML config (default: built-in digits)")
    r.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    r.add_argument("--device", default=None)
    r.add_argument("--data-dir", default=None)
    rep = sub.add_parser("report", help="(re)write report.md and report.html of a run folder")
    rep.add_argument("run_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sparring` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        from . import commands

        return int(getattr(commands, f"cmd_{args.command}")(args) or 0)
    except SparringError as exc:
        print(f"sparring: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparring: interrupted; finished work is kept: rerun `run` as it was, `train` or `defend` with "
              "--resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["build_parser", "main", "parse_attack"]
