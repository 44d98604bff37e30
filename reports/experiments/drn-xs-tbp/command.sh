python -m physgrad train --preset drn-xs --algorithm tbp --epochs 1 --train-size 20000 --seed 0 --threads 1 --out reports/experiments/drn-xs-tbp --no-progress
