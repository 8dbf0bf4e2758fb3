"""The base class of every error a user's input causes (a bad config value, an unusable
file): entry points print its message as one line and exit 2; anything else is a bug."""


class UserError(Exception):
    """Input we cannot use; the message names the config key or file and what to do."""
