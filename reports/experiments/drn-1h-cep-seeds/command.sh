# MNIST from the folder named by PHYSGRAD_DATA (holding mnist/); the sweep folder is outside the repo,
# its results.csv, summary.md and curves.png are copied here.
PHYSGRAD_DATA=/path/to/data python -m physgrad sweep reports/experiments/drn-1h-cep-seeds/spec.toml --out runs/drn-1h-cep-seeds --workers 2 --no-progress
