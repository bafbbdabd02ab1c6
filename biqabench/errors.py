"""The one exception type users see as a one-line message (the CLI prints it without a traceback)."""


class BiqaError(Exception):
    """A user-facing error: the message names the file/option/row at fault and what would fix it."""
