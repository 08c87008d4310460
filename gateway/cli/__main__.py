"""``python -m citytwin.gateway.cli``: the same as the ``citytwin`` command."""

import sys

from citytwin.gateway.cli.main import main

sys.exit(main())
