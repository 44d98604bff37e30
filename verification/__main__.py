"""``python -m verification [--quick] [--out DIR] [--seed S]``: the same as ``physgrad verify``.

The command line lives on the top floor (``physgrad.cli``), above this package: this entry point
hands its arguments to ``python -m physgrad verify`` in place of the current process (``os.execv``:
same process id, standard streams and exit code) instead of importing the CLI from below it.
"""
import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "physgrad", "verify", *sys.argv[1:]])
