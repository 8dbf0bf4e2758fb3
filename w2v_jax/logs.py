"""Terminal hygiene for the launch entry points."""

import logging

from absl import logging as absl_logging

# Libraries whose INFO lines drown ours (orbax logs every save step; jax probes for TPUs).
_NOISY = ("/orbax/", "/jax/_src/xla_bridge.py")


class _QuietLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(s in record.pathname for s in _NOISY)


def quiet_library_logs() -> None:
    """Drop INFO lines from noisy libraries; their warnings and errors still show."""
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())
