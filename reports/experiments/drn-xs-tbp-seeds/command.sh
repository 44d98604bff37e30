# MNIST from the folder named by PHYSGRAD_DATA (holding mnist/); the sweep folder is outside the repo,
# its results.csv, summary.md and curves.png are copied here.
PHYSGRAD_DATA=/path/to/data python -m physgrad sweep reports/experiments/drn-xs-tbp-seeds/spec.toml --out runs/drn-xs-tbp-seeds --workers 1 --no-progress
