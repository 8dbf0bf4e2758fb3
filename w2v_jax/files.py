"""Small file helpers shared by every stage: one way to write a file others may read."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, value: Any, *, indent: int = 2) -> None:
    """Write JSON whole or not at all: a reader (another process, a resumed run) never sees
    half a file, since the rename replaces the old one in one step."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=indent, ensure_ascii=False)
    os.replace(tmp, path)
