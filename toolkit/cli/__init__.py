"""The command line, ``python -m toolkit``: :mod:`.parser` parses; :mod:`.commands` and :mod:`.run_tools` call
the stages.

Exit codes, the same for every command: 0 success; 1 a failed drift gate and nothing else; 2 bad input or
environment (one line naming the file, field or value and what to do); 3 an unexpected error, which is a
bug (one line, the traceback with ``--debug``); 130 an interrupt. TensorFlow's and absl's native log
lines are hidden unless ``--verbose`` asks for them (:mod:`.quiet`).
"""

from __future__ import annotations

import sys
import traceback

from toolkit.base.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_GATE_FAILED, EXIT_INTERRUPTED, GateFailed, ToolkitError
from toolkit.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the model card's "reproduce"
    try:
        from toolkit.cli import commands, run_tools

        return (getattr(commands, f"cmd_{args.command}", None) or getattr(run_tools, f"cmd_{args.command}"))(args)
    except BaseException as error:  # every way out gets its one line and its exit code
        return _report(error, args.debug)


def _report(error: BaseException, debug: bool) -> int:
    """Print the one line for ``error`` (and its traceback with ``--debug``) and return the exit code."""
    if isinstance(error, SystemExit):  # argparse inside a command, or a library's own exit
        raise error
    if debug:
        traceback.print_exception(error)
    if isinstance(error, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(error, ToolkitError):
        print(f"error: {error}", file=sys.stderr)
        return EXIT_GATE_FAILED if isinstance(error, GateFailed) else EXIT_BAD_INPUT
    if isinstance(error, OSError) and error.strerror:  # the disk, not the toolkit: full, read-only, gone
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror}{where}: check that path, its permissions and free space", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(error, MemoryError):
        print("error: out of memory: lower --batch-size or --input-size, or use a machine with more", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = str(error).splitlines()[0] if str(error) else ""
    hint = "" if debug else "; rerun with --debug for the traceback"
    print(f"error: unexpected {type(error).__name__}: {summary} (a bug in the toolkit{hint})", file=sys.stderr)
    return EXIT_BUG
