"""The one exception the data layer raises for bad input."""


class DataError(ValueError):
    """Input we cannot use; the message names the offending file (and line or interval)."""
