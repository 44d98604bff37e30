python -m physgrad train --preset drn-xs --algorithm cep --epochs 10 --seed 0 --threads 2 --out reports/experiments/drn-xs-cep --no-progress
