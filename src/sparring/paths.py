"""Where data and weights live, and their sha256 digests.

Lookup order for the data folder: an explicit argument (``--data-dir``), the environment
variable ``SPARRING_DATA``, then the first existing of ``<cwd>/../shared/data`` and
``<repo>/../shared/data`` (``<repo>`` is the folder holding ``pyproject.toml`` above this
file). Weights follow the same pattern with ``SPARRING_WEIGHTS`` and ``weights``.
Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, DataError, InputError

__all__ = [
    "KNOWN_SHA256",
    "check_name",
    "check_sha256",
    "default_data_dirs",
    "default_weights_dirs",
    "find_data_dir",
    "find_weights_dir",
    "inside",
    "repo_root",
    "sha256_file",
]

#: sha256 of the reference files (public digests of the official distributions), by file name.
KNOWN_SHA256: dict[str, str] = {
    "cifar10.npz": "a44cc18e4ad961b5158c7da062a6232fb65938b615bf013046199b823b75c43d",
    "fashion_mnist_test.npz": "40cc5f7c7185a3f578d2e072deede39bcb9b9eedb4b716e70d55777fd0a88138",
    "mnist.npz": "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
    "advertorch_mnist_lenet5_advtrained.pt": (
        "b89abfcfe8b33235fe8f8e964188d82a97c56a12ffe25132eaba197e40ac7658"
    ),
    "advertorch_mnist_lenet5_clntrained.pt": (
        "551a11267982991fb0c9f74e9094de19e54b51455eff9bd1c19c77a69d85156a"
    ),
    "akamaster_resnet20-12fca82f.th": (
        "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"
    ),
    "akamaster_resnet56-4bfd9763.th": (
        "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"
    ),
}

_CHUNK = 1 << 20
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def safe_name(text: object, limit: int = 0) -> str:
    """A file-name piece from any text: runs of characters other than letters, digits, '.', '_' and '-'
    become '-'; at most `limit` characters when limit > 0; "x" when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return (name[:limit] if limit > 0 else name) or "x"


def check_name(text: object, what: str) -> str:
    """``text`` if it is a name: a non-empty string without path separators, control characters or a
    leading '.' (so no '..', no hidden file, no absolute path). Names become file names inside a run
    folder; a path there could write anywhere. Raises ConfigError naming ``what``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{what}: expected a non-empty name, got {text!r}")
    if any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in text) or text.startswith("."):
        raise ConfigError(f"{what}: expected a name without '/', '\\', control characters or a leading '.', "
                          f"got {text!r}")
    return text


def inside(folder: Path, path: Path) -> Path:
    """``path`` if it resolves inside ``folder`` (links followed), else InputError: every file a run writes
    stays in its output folder."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise InputError(f"expected a path inside {folder}, got {path}")
    return path


def repo_root() -> Path | None:
    """Return the nearest parent of this source file that holds ``pyproject.toml``, or None.

    Example:
        >>> root = repo_root()  # e.g. Path("/work/main") in an editable install
    """
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def _shared_candidates(leaf: str) -> list[Path]:
    """``<cwd>/../shared/<leaf>`` and ``<repo>/../shared/<leaf>``, without duplicates."""
    out = [Path.cwd() / ".." / "shared" / leaf]
    root = repo_root()
    if root is not None:
        out.append(root / ".." / "shared" / leaf)
    unique: list[Path] = []
    for path in out:
        path = Path(os.path.normpath(path))
        if path not in unique:
            unique.append(path)
    return unique


def default_data_dirs() -> list[Path]:
    """Return the default data folders searched when neither argument nor env var is set.

    Example:
        >>> [str(p) for p in default_data_dirs()]  # doctest: +SKIP
        ['/work/shared/data']
    """
    return _shared_candidates("data")


def default_weights_dirs() -> list[Path]:
    """Return the default weights folders (``../shared/weights`` from cwd and from the repo)."""
    return _shared_candidates("weights")


def _existing_dir(path: str | Path, what: str) -> Path:
    """Resolve ``path`` and check it is a directory, else DataError."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise DataError(f"{what} {path} does not exist")
    if not resolved.is_dir():
        raise DataError(f"{what} {path} is not a directory")
    return resolved


def _resolve_dir(explicit: str | Path | None, env_name: str, what: str,
                 candidates: Callable[[], list[Path]]) -> Path | None:
    """explicit (must exist) > $env_name (must exist) > the first existing candidate > None."""
    if explicit is not None and str(explicit) != "":
        return _existing_dir(explicit, what)
    env = os.environ.get(env_name, "")
    if env:
        return _existing_dir(env, f"{what} ({env_name})")
    for candidate in candidates():
        if candidate.is_dir():
            return candidate.resolve()
    return None


def find_data_dir(explicit: str | Path | None = None) -> Path | None:
    """Return the data folder: ``explicit`` > ``$SPARRING_DATA`` > ``../shared/data``.

    Args:
        explicit: a folder given by the user (``--data-dir``); it must exist.
    Returns:
        The resolved folder, or None when no argument, no env var and no default exists.
    Raises:
        DataError: ``explicit`` or ``$SPARRING_DATA`` names a folder that does not exist.

    Example:
        >>> find_data_dir("/work/shared/data")  # doctest: +SKIP
        PosixPath('/work/shared/data')
    """
    return _resolve_dir(explicit, "SPARRING_DATA", "data dir", default_data_dirs)


def find_weights_dir(
    explicit: str | Path | None = None, *, data_dir: str | Path | None = None
) -> Path | None:
    """Return the weights folder.

    Order: ``explicit`` > ``$SPARRING_WEIGHTS`` > the sibling ``weights`` of the data folder
    (``find_data_dir(data_dir)``) > ``<cwd>/../shared/weights`` > ``<repo>/../shared/weights``.

    Args:
        explicit: a folder given by the user; it must exist.
        data_dir: passed to ``find_data_dir`` to locate the sibling ``weights`` folder.
    Returns:
        The resolved folder, or None when nothing is found.
    Raises:
        DataError: ``explicit`` or ``$SPARRING_WEIGHTS`` names a folder that does not exist.

    Example:
        >>> find_weights_dir()  # doctest: +SKIP
        PosixPath('/work/shared/weights')
    """
    def candidates() -> list[Path]:
        try:
            data = find_data_dir(data_dir)
        except DataError:
            data = None
        return ([data.parent / "weights"] if data is not None else []) + default_weights_dirs()

    return _resolve_dir(explicit, "SPARRING_WEIGHTS", "weights dir", candidates)


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Digests are cached in-process by (resolved path, size, mtime_ns), so hashing a large
    file twice in one run costs one read.

    Example:
        >>> sha256_file("/work/shared/data/mnist.npz")[:12]  # doctest: +SKIP
        '06af5dfe73b7'
    """
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
        digest = hashlib.sha256()
        with open(resolved, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def check_sha256(
    path: str | Path,
    expected: str | None = None,
    *,
    setting: str = "--data-dir / SPARRING_DATA",
) -> str:
    """Hash ``path`` and compare with ``expected`` (default: ``KNOWN_SHA256`` by file name).

    Args:
        path: the file to check.
        expected: the hex digest; None looks the basename up in ``KNOWN_SHA256`` and skips
            the comparison when the name is not known.
        setting: the option / env var named in the error message.
    Returns:
        The file's hex digest.
    Raises:
        DataError: the digest differs (one line: got / expected prefixes and the remedy).

    Example:
        >>> check_sha256("/work/shared/data/mnist.npz")[:12]  # doctest: +SKIP
        '06af5dfe73b7'
    """
    got = sha256_file(path)
    if expected is None:
        expected = KNOWN_SHA256.get(Path(path).name)
    if expected is not None and got != expected.lower():
        raise DataError(
            f"{path}: sha256 {got[:12]}…, expected {expected[:12]}… — the file is corrupt or "
            f"truncated; replace it or point {setting} at a good copy"
        )
    return got
