"""One help style for every ``citytwin`` command: option defaults shown, descriptions kept as written.

argparse's ``ArgumentDefaultsHelpFormatter`` also prints ``(default: None)`` and
``(default: False)``, which say nothing; this one shows a default only when there is one.
"""

from __future__ import annotations

import argparse
from typing import Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or "default:" in text or "(default" in text:
            return text
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """The ``citytwin`` parser: its subcommands' parsers are of this class too (argparse
    builds them with ``type(parent)``), so every command gets the same help style."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
