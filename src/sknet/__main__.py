"""``python -m sknet``: the same as the ``sknet`` command."""

import sys

from .cli import main

sys.exit(main())
