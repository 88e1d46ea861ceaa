"""The one error type the CLI turns into a one-line message and exit code 2."""


class ToolkitError(Exception):
    """Bad input or environment: the message says what and where, in one line."""
