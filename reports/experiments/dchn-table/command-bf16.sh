#!/bin/sh
# the table's recipe with bfloat16 convolutions in the sweeps (--conv-dtype bfloat16)
cd /work/wt-dchn2
export PYTHONPATH=$PWD NUMBA_CACHE_DIR=/work/numba-cache-dchn2 PHYSGRAD_DATA=/work/shared/data
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec nice -n 5 /usr/bin/time -v python3 -m physgrad train --preset dchn-mnist --dataset mnist --algorithm cep \
  --train-size 10240 --test-size 2000 --epochs 3 --seed 0 --backend torch --conv-dtype bfloat16 \
  --out /work/dchn2-runs/mnist-cep-bf16 --no-progress
