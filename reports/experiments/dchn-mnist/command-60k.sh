#!/bin/sh
# the full-data C-EP run of dchn-mnist (issue 22, item 3 / target): all 60,000 training images, 10 epochs
# (cosine schedule over the 10 epochs), all 10,000 test images after every epoch; the preset's recipe otherwise
export PYTHONPATH=$PWD NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/physgrad/numba} PHYSGRAD_DATA=${PHYSGRAD_DATA:?set PHYSGRAD_DATA}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec /usr/bin/time -v python3 -m physgrad train --preset dchn-mnist --dataset mnist --algorithm cep \
  --epochs 10 --seed 0 --backend torch --out ${RUNS:-runs}/dchn-mnist-cep-60k --no-progress "$@"
