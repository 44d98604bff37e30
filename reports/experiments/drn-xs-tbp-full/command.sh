python -m physgrad train --preset drn-xs --algorithm tbp --seed 0 --threads 1 --out reports/experiments/drn-xs-tbp-full --no-progress
