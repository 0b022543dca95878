"""User-facing errors.

A :class:`CxrlabError` is a mistake in the user's input (a file, a config, a
flag).  The CLI prints its message on one line and exits with status 2; no
traceback.  Messages name the file or key and say what is wrong.
"""


class CxrlabError(Exception):
    """An error caused by user input, reported as one line without a traceback."""


class ConfigError(CxrlabError):
    """An invalid experiment configuration (unknown key, wrong type, bad value)."""
