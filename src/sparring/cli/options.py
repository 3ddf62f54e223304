"""What the subcommands share: the option groups, NAME:key=value specs, eps lists, training settings from
flags, and the logging handler that prints progress on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, NoReturn

from ..config import TrainSettings, parse_eps
from ..errors import ConfigError

__all__ = ["Parser", "common", "eps_list", "install_logging", "model_args", "parse_attack", "resume_arg",
           "settings_from", "speed_args", "train_args"]


class Parser(argparse.ArgumentParser):
    """argparse whose errors are ConfigError, so the CLI prints them in one line with exit code 2."""

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
    if re.fullmatch(r"[0-9.]+\s*/\s*[0-9.]+", text):  # a fraction like 8/255; other text (paths) stays text
        return parse_eps(text)[1]
    return text


def parse_attack(text: str) -> tuple[str, dict[str, Any]]:
    """"pgd:steps=20,restarts=2,loss=margin" -> ("pgd", {...}); defenses and detectors use the same syntax."""
    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"expected attack options as key=value, got {item!r} in {text!r}")
        params[key.strip().replace("-", "_")] = _value(val.strip())
    return name.strip(), params


def eps_list(values: list[str]) -> tuple[str, ...]:
    """--eps values (repeatable, comma-separated) as labels, each checked."""
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    for v in out:
        parse_eps(v)
    return tuple(out)


class _Progress(logging.Handler):
    """Log records as plain lines on stderr, flushed (stdout stays for results and --json)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except Exception:  # a closed stderr must not stop the work
            self.handleError(record)


def install_logging() -> None:
    """Progress of the "sparring" loggers on stderr at INFO (warnings only on the other ranks of a torchrun
    job); once per process."""
    logger = logging.getLogger("sparring")
    if not any(isinstance(h, _Progress) for h in logger.handlers):
        handler = _Progress()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    main_rank = os.environ.get("RANK", "0") in ("", "0")
    logger.setLevel(logging.INFO if main_rank else logging.WARNING)


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder with the datasets (default: $SPARRING_DATA or ../shared/data)")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=0)


def model_args(p: argparse.ArgumentParser, model_help: str = "architecture, pretrained alias, or saved model path",
               dataset_help: str | None = None) -> None:
    """--dataset, --model, --weights, --weights-dir: a trained model to evaluate, attack or measure."""
    p.add_argument("--dataset", default="digits", help=dataset_help)
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--weights", default="", help="weights file or pretrained alias for --model")
    p.add_argument("--weights-dir", default=None, help="folder with pretrained files (default $SPARRING_WEIGHTS)")


def train_args(p: argparse.ArgumentParser, *, epochs: int, schedule: str | None) -> None:
    """The TrainSettings flags (defaults: TrainSettings's, but for epochs; schedule None: the recipe's)."""
    d = TrainSettings()
    for flag, kind, default in [("--epochs", int, epochs), ("--batch-size", int, d.batch_size), ("--lr", float, d.lr),
                                ("--momentum", float, d.momentum), ("--weight-decay", float, d.weight_decay)]:
        p.add_argument(flag, type=kind, default=default)
    p.add_argument("--optimizer", default=d.optimizer, help="sgd or adam")
    p.add_argument("--schedule", default=schedule, help="cosine, step, onecycle or none"
                   + (" (default: the recipe's)" if schedule is None else ""))
    p.add_argument("--augment", default=d.augment, help="none, crop or crop-flip")


def speed_args(p: argparse.ArgumentParser) -> None:
    """Training speed opt-ins (sparring.precision); measured in docs/training-speed.md."""
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="mixed precision for training: autocast to bf16 or fp16 (gradient scaler); default fp32")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format for training")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training")


def resume_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command: while training, OUT.partial.* holds the "
                        "latest epoch and its training state (distillation also OUT.partial.teacher.*); they are "
                        "removed once the model is saved at OUT. Without them, train from scratch. Without "
                        "--resume they are overwritten. The settings and the number of torchrun processes must "
                        "match the interrupted run")


def settings_from(args: argparse.Namespace, schedule: str) -> TrainSettings:
    """The TrainSettings of train_args and speed_args flags, with the schedule resolved by the caller."""
    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay, schedule=schedule,
                         augment=args.augment, precision=args.precision, channels_last=args.channels_last,
                         compile=args.compile)
