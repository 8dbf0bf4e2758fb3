"""Terminal hygiene: libraries' chatter stays quiet, our own warnings still show.

Our warnings go through Python's `warnings` or `logging` (absl's logger), which show by
default; this only drops other libraries' routine lines.
"""

import logging
import sys

from absl import logging as absl_logging

# Libraries whose INFO lines drown ours (orbax logs every save step; jax probes for TPUs;
# TFDS logs every shard it writes).
_NOISY = ("/orbax/", "/jax/_src/xla_bridge.py", "/tensorflow_datasets/")
# Warnings that describe what we do on purpose: we open checkpoints read-only to restore them.
_ROUTINE_WARNINGS = ("Given directory is read only", "CheckpointManagerOptions.read_only=True")


class _QuietLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not any(s in record.pathname for s in _NOISY):
            return True
        if record.levelno < logging.WARNING:
            return False
        return not any(str(record.msg).startswith(m) for m in _ROUTINE_WARNINGS)


_FILTER = _QuietLibraries()


def quiet_library_logs() -> None:
    """Drop noisy libraries' INFO lines and routine warnings; their other warnings and errors
    still show. Idempotent; `import w2v_jax` calls it."""
    logging.getLogger("absl").addFilter(_FILTER)  # orbax and TFDS log through absl's logger
    absl_logging.get_absl_handler().addFilter(_FILTER)  # what reaches absl's handler (jax)


def quiet_progress_bars() -> None:
    """No TFDS progress bars (launch.prepare_data has its own per-split one). The entry points
    call it; a library user keeps TFDS's default."""
    if "tensorflow_datasets" in sys.modules:  # only launch.prepare_data loads TFDS
        sys.modules["tensorflow_datasets"].disable_progress_bar()
