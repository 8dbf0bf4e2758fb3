"""The one exception the data layer raises for bad input."""

from w2v_jax.errors import UserError


class DataError(UserError, ValueError):
    """Input we cannot use; the message names the offending file (and line or interval)."""
