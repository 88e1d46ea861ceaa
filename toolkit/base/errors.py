"""The one error type the CLI turns into a one-line message and exit code 2."""


class ToolkitError(Exception):
    """Bad input or environment: the message says what and where, in one line."""


class GateFailed(ToolkitError):
    """The drift gate failed: exit code 1, so a release script can tell it from bad input (2)."""
