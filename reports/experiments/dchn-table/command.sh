#!/bin/sh
# usage: command.sh DATASET ALGORITHM [extra args]; the table's fixed recipe (issue 22)
# CELL=NAME names the run folder of a variant (default DATASET-ALGORITHM), e.g.
# CELL=mnist-pep-relaxed sh command.sh mnist pep --zero-phase relaxed
ds=$1; alg=$2; shift 2
# run from the repository root
export PYTHONPATH=$PWD NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/physgrad/numba} PHYSGRAD_DATA=${PHYSGRAD_DATA:?set PHYSGRAD_DATA to the folder holding mnist/ and fashion-mnist/}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
exec nice -n 5 /usr/bin/time -v python3 -m physgrad train --preset dchn-mnist --dataset $ds --algorithm $alg \
  --train-size 10240 --test-size 2000 --epochs 3 --seed 0 --backend torch \
  --out ${RUNS:-runs/dchn-table}/${CELL:-$ds-$alg} --no-progress "$@"
