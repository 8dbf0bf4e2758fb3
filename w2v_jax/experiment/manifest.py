"""Which stages of an experiment are finished, and what produced them.

A stage counts as done only when the manifest records it, never because a path exists: a
directory left by a crash, or produced by another configuration, is not a finished stage.
The manifest is rewritten whole after each stage (w2v_jax.files.write_json).
"""

from __future__ import annotations

import datetime
from typing import Any

from w2v_jax import files
from w2v_jax.models import ConfigError

MANIFEST_FILE = "manifest.json"


class Manifest:
    """`done(stage, produced_by)` / `record(stage, produced_by, **outputs)` over WORKDIR/manifest.json."""

    def __init__(self, workdir: files.PathLike):
        self.path = files.path(workdir) / MANIFEST_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self.stages = files.read_json(self.path)["stages"]

    def done(self, stage: str, produced_by: dict[str, Any]) -> bool:
        """True when `stage` finished under the same inputs; an error when under others."""
        entry = self.stages.get(stage)
        if entry is None:
            return False
        if entry["produced_by"] != produced_by:
            changed = sorted(k for k in {*entry["produced_by"], *produced_by}
                             if entry["produced_by"].get(k) != produced_by.get(k))
            raise ConfigError(f"{self.path}: stage {stage!r} was produced with other "
                              f"{', '.join(changed)}; use a new workdir for a new configuration")
        return True

    def outputs(self, stage: str) -> dict[str, Any]:
        return self.stages[stage]["outputs"]

    def record(self, stage: str, produced_by: dict[str, Any], **outputs: Any) -> None:
        self.stages[stage] = {"produced_by": produced_by, "outputs": outputs,
                              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                                  timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        files.write_json(self.path, {"stages": self.stages})
