"""Exceptions shared across pyrobust's packages."""


class UsageError(ValueError):
    """A mistake in what the user asked for (unknown name, missing path, bad config).

    The ``pyrobust`` command prints it in one line and exits with status 2.
    """
