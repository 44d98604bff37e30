"""``python -m physgrad ...``: the same as the ``physgrad`` command."""
import sys

try:
    from physgrad.cli import main
except KeyboardInterrupt:  # Ctrl-C while starting up: nothing was written; exit as the shell would report it
    sys.stderr.write("\nphysgrad: interrupted\n")
    sys.exit(130)

sys.exit(main())
