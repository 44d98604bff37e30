"""``physgrad download NAME [--dest D] [--mirror URL ...]``: an MNIST-format dataset, checksums verified."""
from __future__ import annotations

from physgrad.layered.data import DATASETS, download


def register(sub) -> None:
    """Add ``download`` to an ``add_subparsers()`` object."""
    p = sub.add_parser("download", help="download an MNIST-format dataset (checksummed)")
    p.add_argument("name", choices=sorted(DATASETS), help="dataset to download")
    p.add_argument("--dest", default=None, help="target folder (default ~/.physgrad/data/NAME)")
    p.add_argument("--mirror", action="append", default=None, help="base URL (repeatable); default: public mirrors")
    p.add_argument("--force", action="store_true",
                   help="replace files in --dest under the dataset's names that are not the published ones "
                        "(only after a verified download); without it such a file is refused (exit 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Download and print the folder."""
    print(download(args.name, args.dest, mirrors=args.mirror, force=args.force))
    return 0
