python -m physgrad.train --preset dhn-1h --algorithm cep --epochs 5 --seed 0 --threads 1 --out reports/experiments/dhn-1h-cep --no-progress
