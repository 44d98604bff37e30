#!/bin/sh
# Short runs of the amplified-DRN experiment (see README.md), in two parallel lanes. From the repository root:
#   nohup sh reports/experiments/amplified-drn/run.sh runs/amplified-drn > runs/amplified-drn/log.txt 2>&1 &
# Every run: generic engine (numpy, float32), 1 thread, seed 0, the first 1000 training images
# (shuffled per epoch), 2 epochs, the first 1000 test images.
OUT=${1:-runs/amplified-drn}
COMMON="--engine generic --threads 1 --seed 0 --train-size 1000 --epochs 2 --test-size 1000 --no-progress --data-dir ${PHYSGRAD_DATA:?set PHYSGRAD_DATA to the data folder}"
run() { name=$1; shift; [ -f "$OUT/$name/metrics.csv" ] && [ "$(wc -l < "$OUT/$name/metrics.csv")" -ge 3 ] && return
        python3 -m physgrad train $COMMON --out "$OUT/$name" "$@"; }
( run g2000-cep       --preset drn-2h --algorithm cep
  run g480-a2x2-cep   --preset drn-2h --algorithm cep --input-gain 480 --amplifier-gains 2,2
  run g480-a3x3-cep   --preset drn-2h --algorithm cep --input-gain 480 --amplifier-gains 3,3
  run g2000-tbp       --preset drn-2h --algorithm tbp ) &
( run g480-cep        --preset drn-2h --algorithm cep --input-gain 480
  run g480-a1.5x1.5-cep --preset drn-2h --algorithm cep --input-gain 480 --amplifier-gains 1.5,1.5
  run g480-a2x2-tbp   --preset drn-2h --algorithm tbp --input-gain 480 --amplifier-gains 2,2 ) &
wait
