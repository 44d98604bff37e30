#!/bin/sh
# issue 22: dchn-mnist, centered EP, a short run on a 10,240-image subset (the machine is shared: 2 cores, load ~15)
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \
python3 -m physgrad train --preset dchn-mnist --data-dir <data> --backend numpy \
    --train-size 10240 --test-size 2000 --epochs 3 --out /tmp/dchn-mnist-run --no-progress
