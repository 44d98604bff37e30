"""``python -m physgrad ...``: the same as the ``physgrad`` command."""
import sys

from physgrad.cli import main

sys.exit(main())
