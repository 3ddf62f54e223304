"""The records of results.jsonl, typed and versioned (docs/run-folder.md).

The runner and the experiment write them; the run store (resume) and the report read them, and both check
each one with ``check_record`` first: a record of a known kind must carry its required keys with their
types. Every record written now has ``"schema": SCHEMA``; a record without one comes from an older
sparring (schema 0) and reads the same way. Keys beyond the ones below are allowed (a later sparring may add
some; the report ignores what it does not know).

(No ``from __future__ import annotations`` here: TypedDict reads NotRequired from evaluated annotations.)
"""

import types
import typing
from typing import Any, NotRequired, TypedDict, Union

from .errors import DataError

__all__ = ["KINDS", "SCHEMA", "AttackRecord", "AuditRecord", "CleanRecord", "LatentRecord", "Record",
           "WorstCaseRecord", "check_record"]

#: Bumped when a record's meaning changes (a renamed or re-defined key). Added keys keep the schema.
SCHEMA = 1

Record = dict[str, Any]


class _Base(TypedDict):
    kind: str
    cell: str
    schema: NotRequired[int]
    model: NotRequired[str]
    defense: NotRequired[str]
    dataset: NotRequired[str]


class CleanRecord(_Base):
    """Clean accuracy: kind "clean", cell "clean"."""

    accuracy: float
    n: NotRequired[int]
    n_correct: NotRequired[int]
    mean_confidence: NotRequired[float]
    confusion: NotRequired[list | None]
    time_s: NotRequired[float]


class AttackRecord(_Base):
    """One (attack, norm, eps) cell: kind "attack", cell "ATTACK|NORM|EPS"."""

    attack: str
    norm: str
    eps: float
    robust_accuracy: float
    attack_name: NotRequired[str]
    attack_kind: NotRequired[str]
    eps_label: NotRequired[str]
    targeted: NotRequired[bool]
    params: NotRequired[dict]
    n: NotRequired[int]
    n_attacked: NotRequired[int]
    n_robust: NotRequired[int]
    attack_success_rate: NotRequired[float | None]
    mean_confidence: NotRequired[float | None]
    norms: NotRequired[dict]
    time_s: NotRequired[float]
    forward: NotRequired[int]
    backward: NotRequired[int]
    queries: NotRequired[int | None]
    robust_bits: NotRequired[str]
    confusion: NotRequired[list | None]
    gallery: NotRequired[str]
    precision: NotRequired[str]


class WorstCaseRecord(_Base):
    """Per-sample worst case over the attacks of one (norm, eps): kind "worst_case", cell "worst|NORM|EPS"."""

    norm: str
    eps: float
    robust_accuracy: float
    eps_label: NotRequired[str]
    attacks: NotRequired[list]
    n: NotRequired[int]
    n_robust: NotRequired[int]
    robust_bits: NotRequired[str]


class AuditRecord(_Base):
    """The gradient-masking audit: kind "audit", cell "audit"; verdict pass, warn, fail or error."""

    verdict: str
    norm: NotRequired[str]
    n: NotRequired[int]
    eps_labels: NotRequired[list]
    checks: NotRequired[list]
    naive: NotRequired[dict | None]
    adaptive: NotRequired[dict | None]
    changes: NotRequired[list]
    error: NotRequired[str]
    time_s: NotRequired[float]


class LatentRecord(_Base):
    """The latent-space projection: kind "latent", cell "latent"; file names its tensors."""

    file: str
    method: NotRequired[str]
    layer: NotRequired[str]
    n: NotRequired[int]
    attack: NotRequired[str]
    norm: NotRequired[str]
    eps: NotRequired[float]
    eps_label: NotRequired[str]
    mean_shift: NotRequired[float]
    mean_centroid_distance: NotRequired[float]


KINDS: dict[str, Any] = {"clean": CleanRecord, "attack": AttackRecord, "worst_case": WorstCaseRecord,
                          "audit": AuditRecord, "latent": LatentRecord}


def _accepts(kind: Any, value: Any) -> bool:
    """Whether a JSON value fits an annotation (an int is a float; a bool is never a number)."""
    origin = typing.get_origin(kind)
    if origin is NotRequired:
        return _accepts(typing.get_args(kind)[0], value)
    if origin in (Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def check_record(obj: Any, where: str) -> Record:
    """``obj`` when it is a record: a JSON object with a string ``cell`` and a ``kind``; for a known kind,
    its required keys, and every key it has of the ones its kind declares, with their types (an eps may be
    null, as JSON writes an infinite eps). Else DataError "WHERE: expected ..." in one line. Records of a kind
    this version does not know pass unchecked (a newer writer); so do keys no kind declares."""
    if not isinstance(obj, dict) or not isinstance(obj.get("cell"), str) or not isinstance(obj.get("kind"), str):
        got = type(obj).__name__ if not isinstance(obj, dict) else ", ".join(sorted(map(str, obj))[:6]) or "{}"
        raise DataError(f"{where}: expected a JSON record with a string 'kind' and 'cell', got {got}")
    schema = obj.get("schema", 0)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA:
        raise DataError(f"{where}: expected a record of schema <= {SCHEMA}, got schema {schema!r} (written by a "
                        "newer sparring)")
    typed = KINDS.get(obj["kind"])
    if typed is None:
        return obj
    hints = typing.get_type_hints(typed, include_extras=True)
    for key in sorted(typed.__required_keys__):
        if key not in obj:
            raise DataError(f"{where}: expected a {obj['kind']} record with {key!r}, got keys {', '.join(sorted(obj))}")
    for key, kind in hints.items():
        if key in obj and not _accepts(kind, obj[key]) and not (key == "eps" and obj[key] is None):
            raise DataError(f"{where}: expected {key!r} of the {obj['kind']} record {obj['cell']!r} to be "
                            f"{_name(kind)}, got {obj[key]!r:.60}")
    return obj


def _name(kind: Any) -> str:
    if typing.get_origin(kind) is NotRequired:
        kind = typing.get_args(kind)[0]
    return getattr(kind, "__name__", str(kind))
