"""``python -m verification [--quick] [--out DIR] [--seed S]``: the same as ``physgrad verify``."""
import sys

from physgrad.cli import main

sys.exit(main(["verify", *sys.argv[1:]]))
