"""Our convolutional Hopfield energy against the authors' code, in float64, same parameters.

Usage::

    python benchmarks/dchn_anchor_check.py --anchor DIR [--sweeps 20] [--nudged-sweeps 300]

``DIR`` holds the authors' repository (rain-neuromorphics/energy-based-learning). With the same
parameters (their ``ConvHopfieldEnergy28`` with 4 and 6 channels; their dense weight
``(c, h, w, n_out)`` is ours ``(c h w, n_out)``) and inputs, it compares

* the free phase after ``--sweeps`` asynchronous sweeps from zero: their ``FixedPointMinimizer`` and
  our :class:`~physgrad.minimizers.block.BlockCoordinateDescent` on
  :class:`~physgrad.energies.conv.ConvHopfield` (the same updates: expected equal to round-off);
* the nudged phase (beta = 0.25, their ``AugmentedFunction``) after ``--nudged-sweeps`` sweeps from the
  free state: their output update is the fixed-point step ``o <- W s + b + beta (y - o)``, ours the exact
  block minimiser ``(W s + b + beta y) / (1 + beta)``: the trajectories differ, the fixed points agree;
* the centered-EP weight gradients from these phases (their ``EquilibriumProp``, ours
  :class:`~physgrad.learning.EquilibriumPropagation`), both at converged phases.

Prints the largest absolute differences.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchor", required=True)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--nudged-sweeps", type=int, default=300)
    a = ap.parse_args(argv)
    sys.path.insert(0, a.anchor)
    import torch
    from model.function.cost import SquaredError
    from model.function.network import Network
    from model.hopfield.minimizer import FixedPointMinimizer
    from model.hopfield.network import ConvHopfieldEnergy28
    from training.sgd import AugmentedFunction, EquilibriumProp

    from physgrad.energies.conv import ConvHopfield
    from physgrad.learning import EquilibriumPropagation
    from physgrad.minimizers.block import BlockCoordinateDescent

    e = ConvHopfield(channels=(4, 6))
    rng = np.random.default_rng(0)
    th = e.init_theta(rng, (0.6, 0.6, 1.5))
    th = th[:3] + tuple(0.1 * rng.normal(size=b.shape) for b in th[3:])
    x = rng.uniform(size=(5, 784))
    labels = rng.integers(0, 10, 5)
    y = np.eye(10)[labels]

    anchor = ConvHopfieldEnergy28(1, 4, 6, 10)
    anchor.set_device("cpu")
    theirs = list(th[3:]) + [th[0], th[1], th[2].reshape(6, 4, 4, 10)]  # their order: biases, then weights
    for p, t in zip(anchor.params(), theirs):
        p._state = torch.as_tensor(t)
    net = Network(anchor)
    free_layers = net.free_layers()
    net.set_input(torch.as_tensor(x).reshape(5, 1, 28, 28), reset=True)
    for layer in free_layers:
        layer._state = layer._state.double()
    m = FixedPointMinimizer(anchor, free_layers, num_iterations=a.sweeps, mode="asynchronous")
    m.compute_equilibrium()
    ours = BlockCoordinateDescent(sweeps=a.sweeps, tol=None).minimize(e, th, x).state
    d = max(float(np.abs(layer.state.reshape(5, -1).numpy() - s).max()) for layer, s in zip(free_layers, ours))
    print(f"free phase after {a.sweeps} sweeps from zero: max |theirs - ours| = {d:.3g}")

    # converged phases and the centered-EP gradient
    m.num_iterations = a.nudged_sweeps
    m.compute_equilibrium()
    cost = SquaredError(anchor.layers()[-1])
    cost.set_target(torch.as_tensor(labels))
    cost._target = cost._target.double()
    augmented = AugmentedFunction(anchor, cost)
    mn = FixedPointMinimizer(augmented, free_layers, num_iterations=a.nudged_sweeps, mode="asynchronous")
    est = EquilibriumProp(anchor.params(), anchor.layers(), augmented, cost, mn, variant="centered", nudging=0.25)
    g_theirs = [g.numpy() for g in est.compute_gradient()]
    bcd = BlockCoordinateDescent(sweeps=a.nudged_sweeps, tol=None)
    g_ours = EquilibriumPropagation(0.25, "centered", strict=False).estimate(e, th, x, y, bcd)
    g_ours = list(g_ours[3:]) + [g_ours[0], g_ours[1], g_ours[2].reshape(6, 4, 4, 10)]
    d = max(float(np.abs(p - q).max()) for p, q in zip(g_theirs, g_ours))
    scale = max(float(np.abs(q).max()) for q in g_ours)
    print(f"centered EP (beta 0.25), phases of {a.nudged_sweeps} sweeps: max |theirs - ours| = {d:.3g} "
          f"(largest gradient entry {scale:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
