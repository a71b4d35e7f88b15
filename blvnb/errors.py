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


class WriteError(BlvnbError, OSError):
    """A file could not be written (disk full, I/O error): names the file and the error; the previous
    version of the file is left as it was. Also an OSError, for code that catches those."""
