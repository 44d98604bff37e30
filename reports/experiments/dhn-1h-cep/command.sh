# First 5 epochs (on a loaded machine), then continued with --resume to the preset's 100 epochs;
# the run was interrupted once with Ctrl-C (SIGINT) during epoch 9 and resumed from that checkpoint.
python -m physgrad train --preset dhn-1h --algorithm cep --epochs 5 --seed 0 --threads 1 --out reports/experiments/dhn-1h-cep --no-progress
python -m physgrad train --preset dhn-1h --algorithm cep --epochs 100 --seed 0 --threads 1 --out reports/experiments/dhn-1h-cep --resume --no-progress
