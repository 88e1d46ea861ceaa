"""The error types the CLI turns into a one-line message, and the exit codes every command keeps to."""

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ToolkitError(Exception):
    """Bad input or environment (exit 2): the message says what and where, and what to do, in one line."""


class GateFailed(ToolkitError):
    """The drift gate failed: exit code 1, so a release script can tell it from bad input (2)."""
