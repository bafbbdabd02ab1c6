"""The one exception type users see as a one-line message (the CLI prints it without a traceback)."""


class BiqaError(Exception):
    """A user-facing error: the message names the file/option/row at fault and what would fix it.

    Messages are one line by construction: line breaks inside quoted user data (a CSV header cell,
    a YAML value) are shown escaped, as ``\\n``, so a log line or a terminal line holds the whole error.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        if isinstance(message, str) and ("\n" in message or "\r" in message):
            message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(message, *args)
