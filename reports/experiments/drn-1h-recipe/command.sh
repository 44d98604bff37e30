# MNIST from the folder named by PHYSGRAD_DATA (holding mnist/); sweep folders are outside the repository,
# their results.csv, summary.md and curves.png (and the optimizer runs' metrics.csv) are copied here.
E=reports/experiments/drn-1h-recipe
export PHYSGRAD_DATA=/path/to/data
# round 1: schedule x averaging x learning rate, DRN-1H, 10 epochs (stopped after 6 of its 8 runs)
python -m physgrad sweep $E/search1.toml --out runs/recipe-search1 --workers 2 --no-progress
# round 2: optimizers, DRN-XS, 20,000 images x 3 epochs (adam 0.01 stopped after 2 epochs; adam 0.003 not run)
for s in sgd-1.0 momentum-0.1 adam-0.01 adam-0.003; do
  python -m physgrad sweep $E/opt-$s.toml --out runs/recipe-opt-$s --workers 1 --no-progress
done
# confirmations over 3 seeds at 50 epochs
python -m physgrad sweep $E/confirm.toml   --out runs/recipe-confirm-a --workers 3 --no-progress   # recipe A
python -m physgrad sweep $E/confirm-b.toml --out runs/recipe-confirm-b --workers 3 --no-progress   # recipe B = preset drn-1h-ema
# recipe C (2026-12-08): B with every learning rate x1.5; interrupted at epochs 19-20 (SIGTERM, then SIGINT to
# the Dask workers), then the same command again resumed the three runs from their checkpoints
python -m physgrad sweep $E/confirm-c.toml --out runs/recipe-confirm-c --workers 3 --no-progress
