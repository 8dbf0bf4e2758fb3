"""Files, local or on an object store: one path type, and one way to write what others may read.

Workdirs, prepared datasets, embedding stores and reports may live on a local disk or on an
object store (`gs://`, `s3://`): every access goes through `path` (etils.epath). Writes are
whole or absent:

- a local file is written under a temporary name and renamed (rename is atomic there);
- an object is uploaded once: an object store shows a finished upload at once, so a reader
  sees the old object or the new one, never half (its "rename" is a copy and a delete,
  neither atomic).

A directory of several files is assembled under a temporary name and renamed on a local disk;
on an object store it is written in place and a completion record is written last (a model
directory's config.json, a store's store.json), which readers require. Memory maps need a
local file: `load_npy` maps local files and reads objects whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import numpy as np
from etils import epath

from w2v_jax.errors import UserError

PathLike = str | os.PathLike
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def path(p: PathLike) -> epath.Path:
    """The one path type: a local path or an object-store URL (gs://bucket/dir)."""
    return epath.Path(p)


def is_local(p: PathLike) -> bool:
    """Whether `p` is on a local file system, where rename is atomic and files can be memory-mapped."""
    return not _URL.match(os.fspath(p))


def absolute(p: PathLike) -> epath.Path:
    """`p` independent of the working directory: a local path made absolute, a URL as it is."""
    return path(os.path.abspath(p) if is_local(p) else p)


def local_only(p: PathLike, what: str) -> str:
    """`p` as a local path string; a UserError naming it if it is a URL (`what` is read locally only)."""
    if not is_local(p):
        raise UserError(f"{os.fspath(p)}: {what} is read from a local disk only (object-store URLs "
                        "work for workdirs, prepared datasets and embedding stores); copy it to a "
                        "local disk first")
    return os.fspath(p)


def read_json(p: PathLike) -> Any:
    return json.loads(path(p).read_text())


def write_bytes(p: PathLike, data: bytes) -> None:
    """Write a file whole or not at all (see the module's docstring)."""
    p = path(p)
    if not is_local(p):
        p.write_bytes(data)  # one upload: readers see the old object or the new
        return
    tmp = p.with_name(f"{p.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(p)


def write_text(p: PathLike, text: str) -> None:
    write_bytes(p, text.encode())


def write_json(p: PathLike, value: Any, *, indent: int = 2) -> None:
    write_text(p, json.dumps(value, indent=indent, ensure_ascii=False))


def copy_file(src: PathLike, dst: PathLike) -> None:
    """Copy between file systems (local disk to object store), streamed."""
    with path(src).open("rb") as source, path(dst).open("wb") as target:
        shutil.copyfileobj(source, target, 1 << 24)


def remove_tree(p: PathLike) -> None:
    """Remove a directory and everything under it, if it exists."""
    if is_local(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        path(p).rmtree(missing_ok=True)


def load_npy(p: PathLike) -> np.ndarray:
    """A .npy array: memory-mapped when local, else read whole."""
    p = path(p)
    if is_local(p):
        return np.load(p, mmap_mode="r")
    with p.open("rb") as f:
        return np.lib.format.read_array(f, allow_pickle=False)
