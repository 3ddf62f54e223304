"""Readers for the file formats datasets ship in: npz archives and idx (MNIST) files.

Every reader turns a parse failure into a one-line DataError naming the file; none of them
executes code from the file (npz is read with ``allow_pickle=False``). The CIFAR-10 pickles
live in ``safe_pickle.py``.
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..paths import check_sha256

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "check_images",
    "check_labels",
    "images_to_tensor",
    "labels_to_tensor",
    "read_idx",
    "read_npz",
]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def read_npz(
    path: str | Path, keys: Iterable[str], *, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read the arrays ``keys`` from an ``.npz`` file, without unpickling.

    Args:
        path: the archive.
        keys: names of the arrays to read (others are not decompressed).
        verify: check the sha256 first when the file name is in ``KNOWN_SHA256``.
    Returns:
        A dict key -> array.
    Raises:
        DataError: sha256 mismatch, not a valid npz (truncated, bad zip), or a key is missing.

    Example:
        >>> arrays = read_npz("mnist.npz", ["x_test", "y_test"])  # doctest: +SKIP
    """
    path = Path(path)
    if verify:
        check_sha256(path)
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in keys:
                if key not in archive.files:
                    have = ", ".join(archive.files) or "nothing"
                    raise DataError(f"{path}: expected an array named {key!r}, got {have}")
                out[key] = archive[key]
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable npz archive ({describe_error(exc)})") from exc
    return out


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or plain, as an unsigned-byte array.

    The header is a big-endian int32 magic number (``2051`` for 3-D images, ``2049`` for
    1-D labels) followed by one big-endian int32 per dimension; the payload must hold exactly
    the product of the dimensions in bytes.

    Args:
        path: the file; gzip is detected from its first bytes, not its name.
        magic: the magic number expected (``IDX_IMAGES_MAGIC`` or ``IDX_LABELS_MAGIC``).
    Returns:
        A uint8 array with the shape from the header.
    Raises:
        DataError: unreadable or truncated gzip, wrong magic number, or wrong payload size.

    Example:
        >>> images = read_idx("t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot read idx file ({describe_error(exc)})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: expected an idx header, got {len(raw)} bytes")
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic:
        raise DataError(f"{path}: expected idx magic number {magic}, got {got_magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: expected a {header}-byte idx header, got {len(raw)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: expected {expected} data bytes for shape {dims}, got {len(raw) - header}"
            " (truncated or corrupt)"
        )
    # copy: frombuffer views are read-only, and torch.from_numpy wants writable memory
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def check_images(
    array: object, shape: Sequence[int], *, what: str, source: str | Path
) -> np.ndarray:
    """Check ``array`` is a uint8 array of exactly ``shape``; return it.

    Example:
        >>> x = check_images(np.zeros((2, 8, 8), np.uint8), (2, 8, 8), what="x", source="f")
    """
    if not isinstance(array, np.ndarray):
        raise DataError(f"{source}: expected {what} as a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8 or tuple(array.shape) != tuple(shape):
        raise DataError(
            f"{source}: expected {what} uint8 of shape {tuple(shape)}, "
            f"got {array.dtype} of shape {tuple(array.shape)}"
        )
    return array


def check_labels(
    array: object, count: int, num_classes: int, *, what: str, source: str | Path
) -> np.ndarray:
    """Check ``array`` holds ``count`` integer labels in ``[0, num_classes)``; return int64.

    Example:
        >>> check_labels([0, 9], 2, 10, what="y", source="f").dtype
        dtype('int64')
    """
    labels = np.asarray(array)
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise DataError(
            f"{source}: expected {what} as {count} integer labels, "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if count and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"{source}: expected {what} in [0, {num_classes - 1}], "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.astype(np.int64, copy=False)


def images_to_tensor(array: np.ndarray, layout: str) -> torch.Tensor:
    """Convert uint8 images to a contiguous float32 (N, C, H, W) tensor in [0, 1].

    One vectorised pass: the uint8 data is copied into a preallocated float32 tensor in the
    target layout, then divided by 255 in place (the same rounding as ``x / 255``).

    Args:
        array: uint8 images.
        layout: ``"NHW"`` (grayscale), ``"NHWC"`` or ``"NCHW"``.

    Example:
        >>> images_to_tensor(np.full((1, 2, 2), 255, np.uint8), "NHW").shape
        torch.Size([1, 1, 2, 2])
    """
    source = torch.from_numpy(np.ascontiguousarray(array))
    if layout == "NHW":
        source = source.unsqueeze(1)
    elif layout == "NHWC":
        source = source.permute(0, 3, 1, 2)
    elif layout != "NCHW":
        raise ValueError(f"expected layout NHW, NHWC or NCHW, got {layout!r}")
    out = torch.empty(tuple(source.shape), dtype=torch.float32)
    out.copy_(source)
    return out.div_(255.0)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Convert integer labels to an int64 tensor (no copy when already int64 and contiguous).

    Example:
        >>> labels_to_tensor(np.array([7, 2], np.uint8)).dtype
        torch.int64
    """
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def describe_error(exc: BaseException) -> str:
    """A short, one-line description of an exception."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
