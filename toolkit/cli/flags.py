"""Flags made from the option dataclasses, so every default and choice is written once, where the option lives.

A field ``epochs_head: int = 3`` becomes ``--epochs-head`` with type ``int`` and default 3; a boolean
that defaults to False becomes a switch, one that defaults to True a ``--no-...`` switch. The CLI adds
only help texts, choices from the registries, and the flags whose shape is not one field's.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import MISSING, fields
from pathlib import Path


def field_defaults(cls) -> dict:
    """Each field's default, without building an instance."""
    defaults = {}
    for field in fields(cls):
        if field.default is not MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def _metavar(kind: type) -> str:
    return {Path: "PATH", int: "N", float: "X"}.get(kind, "TEXT")


def add_fields(
    parser: argparse.ArgumentParser,
    cls,
    helps: dict[str, str],
    choices: dict[str, Iterable[str]] | None = None,
    skip: Iterable[str] = (),
    metavars: dict[str, str] | None = None,
    flags: dict[str, str] | None = None,
) -> None:
    """One flag per field of the dataclass ``cls`` (except ``skip``), typed and defaulted by the field.

    The flag is the field's name with dashes, unless ``flags`` names it otherwise; its ``dest`` is the field's name.
    """
    choices, metavars, flags = choices or {}, metavars or {}, flags or {}
    defaults = field_defaults(cls)
    for field in fields(cls):
        if field.name in skip:
            continue
        default = defaults.get(field.name)
        flag = flags.get(field.name, "--" + field.name.replace("_", "-"))
        help_text = helps.get(field.name, "")
        if isinstance(default, bool):
            if default:
                off = "--no-" + field.name.replace("_", "-")
                parser.add_argument(off, dest=field.name, action="store_false", help=help_text)
            else:
                parser.add_argument(flag, dest=field.name, action="store_true", help=help_text)
            continue
        kind = Path if "Path" in str(field.type) else type(default) if default is not None else str
        shown = f"default {default}" if default not in ("", None) else ""
        parser.add_argument(
            flag,
            dest=field.name,
            type=kind,
            default=default,
            choices=choices.get(field.name),
            metavar=metavars.get(field.name) or (None if field.name in choices else _metavar(kind)),
            help="; ".join(part for part in (help_text, shown) if part) or None,
        )
