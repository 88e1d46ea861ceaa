"""The command line, ``python -m toolkit``: :mod:`.parser` parses, :mod:`.commands` calls the stages.

Exit codes: 0 success, 1 a failed drift gate, 2 bad input (one line naming the file or value), 130 an
interrupt. TensorFlow's and absl's native log lines are hidden unless ``--verbose`` asks for them
(:mod:`.quiet`).
"""

from __future__ import annotations

import sys

from toolkit.base.errors import GateFailed, ToolkitError
from toolkit.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the model card's "reproduce"
    from toolkit.cli import commands

    try:
        return getattr(commands, f"cmd_{args.command}")(args)
    except GateFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
