#!/bin/sh
# usage: run.sh DATASET ALGORITHM [extra args]; the table's fixed recipe (issue 22)
ds=$1; alg=$2; shift 2
cd /work/wt-dchn2
export PYTHONPATH=$PWD NUMBA_CACHE_DIR=/work/numba-cache-dchn2 PHYSGRAD_DATA=/work/shared/data
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec nice -n 5 /usr/bin/time -v python3 -m physgrad train --preset dchn-mnist --dataset $ds --algorithm $alg \
  --train-size 10240 --test-size 2000 --epochs 3 --seed 0 --backend torch \
  --out /work/dchn2-runs/$ds-$alg --no-progress "$@"
