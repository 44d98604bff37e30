"""Prepared GPU run of the DCHN speed comparison (not run on this CPU-only machine).

Usage on a machine with a CUDA device and torch (the authors' code unpacked in ``ANCHOR``)::

    python benchmarks/dchn_gpu.py --anchor ANCHOR [--data-dir D] [--report reports/benchmarks/dchn_gpu.md]

It runs :mod:`benchmarks.dchn_speed` with ``--device cuda --engines anchor,torch`` at the study's MNIST
setting (batch 128, 15 sweeps per phase) and then at the study's CIFAR-size channel counts on the
same 28x28 network (128, 256 channels) to show how the ratio scales with the work per batch; each
timing synchronises the device after every batch. TF32 stays off on our side (``conv_torch.setup``);
the authors' code runs as it is.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dchn_speed  # noqa: E402


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    report = None
    if "--report" in argv:
        i = argv.index("--report")
        report = argv[i + 1]
        del argv[i:i + 2]
    texts = []
    for channels in ("32,64", "128,256"):
        out = f"/tmp/dchn_gpu_{channels.replace(',', 'x')}.md"
        dchn_speed.main(argv + ["--device", "cuda", "--engines", "anchor,torch", "--channels", channels,
                                "--rounds", "3", "--batches", "10", "--report", out])
        texts.append(Path(out).read_text())
    if report:
        Path(report).write_text("\n\n".join(texts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
