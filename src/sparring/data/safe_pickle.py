"""Read the CIFAR-10 python pickles without executing code from them.

``pickle.load`` calls any global a file names (``os.system`` included). The unpickler here
resolves only the handful of globals a pickled dict of numpy arrays needs and raises
DataError for anything else, before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .formats import check_labels, describe_error

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

__all__ = ["read_cifar_batch", "read_cifar_meta", "safe_unpickle"]


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to rebuild bytes."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise DataError(f"expected bytes encoded as latin1 in the pickle, got {encoding!r}")
    return text.encode("latin1", errors)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): bytes,
    ("builtins", "bytes"): bytes,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` knows only numpy array reconstruction."""

    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed global, or raise DataError without importing anything."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refusing to unpickle {module}.{name} "
                "(expected only numpy arrays, lists and bytes)"
            ) from None


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, dtypes, bytes and builtin containers.

    Args:
        path: a pickle file (protocol 2 as in the official CIFAR-10 distribution, or later).
    Returns:
        The unpickled object; byte strings stay ``bytes`` (``encoding="bytes"``).
    Raises:
        DataError: the file names any other global, or cannot be parsed.

    Example:
        >>> batch = safe_unpickle("cifar-10-batches-py/test_batch")  # doctest: +SKIP
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _NumpyOnlyUnpickler(handle, path).load()
    except DataError:
        raise
    except Exception as exc:  # a hostile or corrupt pickle can raise nearly anything
        raise DataError(f"{path}: not a readable pickle ({describe_error(exc)})") from exc


def _field(mapping: dict[Any, Any], key: str, path: Path) -> Any:
    """``mapping[key]`` accepting bytes or str keys (python 2 vs 3 pickles)."""
    for candidate in (key.encode(), key):
        if candidate in mapping:
            return mapping[candidate]
    have = ", ".join(sorted(repr(k) for k in mapping))
    raise DataError(f"{path}: expected a key {key!r}, got {have or 'no keys'}")


def read_cifar_batch(path: str | Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch file: a dict with ``data`` (N, 3072) uint8 and ``labels``.

    Args:
        path: e.g. ``cifar-10-batches-py/data_batch_1``.
        num_classes: labels must lie in ``[0, num_classes)``.
    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) (each row is 1024 R, then G, then B values,
        row-major) and int64 (N,).
    Raises:
        DataError: unsafe or unreadable pickle, missing keys, wrong shapes or label range.

    Example:
        >>> x, y = read_cifar_batch("cifar-10-batches-py/test_batch")  # doctest: +SKIP
    """
    path = Path(path)
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = _field(batch, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray) \
            else type(data).__name__
        raise DataError(f"{path}: expected data as uint8 of shape (N, 3072), got {got}")
    labels = _field(batch, "labels", path)
    labels = check_labels(labels, data.shape[0], num_classes, what="labels", source=path)
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_meta(path: str | Path) -> tuple[str, ...]:
    """Read ``batches.meta`` and return its ``label_names`` as strings.

    Example:
        >>> read_cifar_meta("cifar-10-batches-py/batches.meta")[:2]  # doctest: +SKIP
        ('airplane', 'automobile')
    """
    path = Path(path)
    meta = safe_unpickle(path)
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a dict, got {type(meta).__name__}")
    names = _field(meta, "label_names", path)
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{path}: expected label_names as a list of strings, got {names!r:.80}")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)
