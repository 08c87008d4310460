"""Reading a config file, with a plain message when the path itself is the problem.

``nope.yaml:0: cannot read: [Errno 2] No such file or directory: 'nope.yaml'`` has a line 0
that does not exist and errno noise; ``no such file: nope.yaml`` says it.
"""

from __future__ import annotations

from pathlib import Path

from citytwin.gateway.config import ConfigError, ConfigIssue


def read_config_text(path: Path) -> str:
    """The file's text, or a ConfigError that says plainly what is wrong with the path."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = "no such file"
    except IsADirectoryError:
        message = "is a directory, not a config file"
    except PermissionError:
        message = "permission denied"
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(source=str(path), line=0, path="", message=f"cannot read: {exc}")]) from None
    raise ConfigError([NoFileIssue(source=str(path), line=0, path="", message=message)])


class NoFileIssue(ConfigIssue):
    """A file that cannot be opened has no line: ``no such file: nope.yaml``."""

    def __str__(self) -> str:
        return f"{self.message}: {self.source}"
