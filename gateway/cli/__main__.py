"""``python -m citytwin.gateway.cli``: the same as the ``citytwin`` command.

SIGTERM is taken before the modules load (seconds on a slow box): a stop requested before
anything started exits cleanly (0); once a command runs, its own handlers take over.
"""

import signal
import sys


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


signal.signal(signal.SIGTERM, _exit_cleanly)

from citytwin.gateway.cli.main import main  # noqa: E402

sys.exit(main())
