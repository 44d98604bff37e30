"""``python -m verification [--quick] [--out DIR]``: run the gradient-verification suite."""
import sys

from physgrad.gradcli import verify_main

if __name__ == "__main__":
    sys.exit(verify_main())
