"""Reading and writing .npz files with one-line errors (user files: events, encodings, datasets)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import TinymemError


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file, loaded (no pickles); a missing or unreadable file is one error."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise TinymemError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise TinymemError(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise TinymemError(f"{path}: a single .npy array, expected an .npz file")
    with z:
        return {k: z[k] for k in z.files}


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        np.savez_compressed(path, **arrays)
    except OSError as exc:
        raise TinymemError(f"cannot write {path}: {exc.strerror}") from None
