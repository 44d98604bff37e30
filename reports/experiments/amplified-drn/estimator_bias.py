"""Bias of EP with island factors on small amplified DRNs, against the exact gradient.

Run from the repository root: ``python3 reports/experiments/amplified-drn/estimator_bias.py``.
Prints a markdown table: relative L2 error of P-EP and C-EP (island factors c_k in the local rule)
against the exact gradient (implicit differentiation of the island-weighted co-content), the error
of that exact gradient against central finite differences of the loss (which use only the KCL
fixed point), and C-EP without the factors. Networks: 3 inputs, hidden (4, 4), 2 outputs, batch 2
(tests/test_amplified_drn.py's ``net``), all phases relaxed to 1e-15 V.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_amplified_drn as T  # noqa: E402
from physgrad.learning import EquilibriumPropagation, ExactGradient  # noqa: E402

BETAS = (0.1, 0.03, 0.01, 0.003, 0.001)
print("| gains (A2, A3) | seed | exact vs FD | beta | P-EP | C-EP | C-EP without c_k |")
print("|---|---|---|---|---|---|---|")
for gains in ((1.0, 1.0), (3.0, 2.0), (0.5, 4.0), (2.0, 2.0)):
    for seed in (4, 5):
        en, th, x, y = T.net(gains=gains, sizes=(3, (4, 4), 2), seed=seed, bias=0.05, batch=2)
        exact = ExactGradient().estimate(en, th, x, y, T.EXACT)
        fd = T.finite_difference_gradient(en, th, x, y)
        c = en.island_weights
        for beta in BETAS:
            pep = EquilibriumPropagation(beta=beta, variant="positive").estimate(en, th, x, y, T.EXACT)
            cep = EquilibriumPropagation(beta=beta, variant="centered").estimate(en, th, x, y, T.EXACT)
            raw = tuple(g / c[k % en.n_layers] for k, g in enumerate(cep))
            print(f"| {gains} | {seed} | {T.rel_err(exact, fd):.1e} | {beta:g} | {T.rel_err(pep, exact):.2e} | "
                  f"{T.rel_err(cep, exact):.2e} | {T.rel_err(raw, exact):.2e} |")
