"""User-facing errors.

Every failure a user can cause (a missing dataset, a bad label, an unknown profile) raises a
:class:`BlvnbError` whose message says what was expected and which command fixes it. A traceback that
is not a ``BlvnbError`` is our bug.
"""


class BlvnbError(Exception):
    """A problem with the user's input, data or configuration, explained in the message."""


class DatasetError(BlvnbError):
    """A data set on disk is missing, incomplete or malformed."""


class ConfigError(BlvnbError):
    """A profile, parameter or configuration value is not one we know."""
