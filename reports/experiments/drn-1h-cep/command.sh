python -m physgrad train --preset drn-1h --algorithm cep --seed 0 --threads 1 --out reports/experiments/drn-1h-cep --no-progress
