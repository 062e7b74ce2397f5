"""Exceptions that carry a message a user can act on.

Entry points print these as one clear line (no traceback wall), because the fix is
in the message: a path to fill, a key to change, an allowed value to pick.
"""


class RnnlabError(Exception):
    """An error whose message names the file or value at fault and the fix."""


class DataNotFoundError(RnnlabError):
    """A dataset file is missing and could not be downloaded."""


class DataFormatError(RnnlabError):
    """A dataset file exists but its content cannot be used as it is."""


class ConfigError(RnnlabError):
    """A configuration value is invalid; raised before any training starts."""
