#!/bin/sh
# the table's recipe with bfloat16 convolutions in the sweeps (--conv-dtype bfloat16)
# run from the repository root
export PYTHONPATH=$PWD NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/physgrad/numba} PHYSGRAD_DATA=${PHYSGRAD_DATA:?set PHYSGRAD_DATA to the folder holding mnist/ and fashion-mnist/}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec nice -n 5 /usr/bin/time -v python3 -m physgrad train --preset dchn-mnist --dataset mnist --algorithm cep \
  --train-size 10240 --test-size 2000 --epochs 3 --seed 0 --backend torch --conv-dtype bfloat16 \
  --out ${RUNS:-runs/dchn-table}/mnist-cep-bf16 --no-progress
