r"""A small gradient-descent loop for any energy of the contract and any estimator.

.. math::  \theta \leftarrow \Pi(\theta - \alpha\,\hat g(\theta)),

with :math:`\hat g` any estimator's estimate of :math:`\partial \bar C/\partial\theta` on a minibatch and
:math:`\Pi` the energy's projection (conductances >= 0), followed by an optional floor ``g_min``
(S) that keeps every conductance strictly positive so no node of a circuit ever floats.

For layered models at scale use :mod:`physgrad.layered.train`; this loop is for small circuits (XOR, 1-D
regression, the 16-edge Iris network), where each equilibrium is a few exact linear solves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from physgrad.types import PhysgradError
from physgrad.learning import optim
from physgrad.learning.cost import mean_cost
from physgrad.learning.optim import OPTIMIZERS
from physgrad.pytree import tree_map


@dataclass(frozen=True)
class FitConfig:
    """Training hyper-parameters.

    Attributes
    ----------
    lr : float
        Learning rate :math:`\\alpha`: S^2/V^2 for ``"sgd"`` on circuits (theta in S, C in V^2); for
        ``"adam"`` the typical step of each parameter (S).
    epochs : int
    batch_size : int or None
        Minibatch size; ``None`` = full batch.
    g_min : float
        Floor applied to every parameter leaf after the projection (S); 0 disables it.
    seed : int
        Seed of the minibatch shuffling.
    optimizer : {"sgd", "momentum", "adam"}
        Plain projected gradient descent, heavy-ball momentum (0.9), or Adam (Kingma & Ba 2015;
        per-parameter steps of size ~``lr`` whatever the estimator's scale, e.g. coupled learning's
        output-conductance factor). See :mod:`physgrad.learning.optim`.
    adam_betas : (float, float)
        Adam's moment decay rates.
    """

    lr: float = 0.1
    epochs: int = 100
    batch_size: Optional[int] = None
    g_min: float = 0.0
    seed: int = 0
    optimizer: str = "sgd"
    adam_betas: tuple = (0.9, 0.999)

    def __post_init__(self):
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise PhysgradError(f"lr must be a finite number > 0, got {self.lr!r}")
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise PhysgradError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.batch_size is not None and (int(self.batch_size) != self.batch_size or self.batch_size < 1):
            raise PhysgradError(f"batch_size must be None or an integer >= 1, got {self.batch_size!r}")
        if not (self.g_min >= 0):
            raise PhysgradError(f"g_min must be >= 0, got {self.g_min!r}")
        if self.optimizer not in OPTIMIZERS:
            raise PhysgradError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        b1, b2 = self.adam_betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise PhysgradError(f"adam_betas must lie in [0, 1), got {self.adam_betas!r}")


@dataclass(frozen=True)
class FitResult:
    """Trained parameters and one history row per epoch (``epoch, cost, seconds`` + ``metrics``)."""

    theta: Any
    history: tuple = field(default_factory=tuple)


def fit(energy, theta, X, Y, minimizer, estimator, config: FitConfig = FitConfig(),
        metrics: Optional[Callable[[Any], dict]] = None, progress: Optional[Callable[[dict], None]] = None) -> FitResult:
    """Train ``theta`` by projected gradient descent with ``estimator``.

    Parameters
    ----------
    energy, minimizer, estimator
        Any energy, minimizer and learning rule of the contract.
    theta : array or tuple of arrays
        Initial parameters.
    X : array, shape ``(n, n_inputs)``; Y : array, shape ``(n, n_out)``
        Training inputs and targets.
    metrics : callable ``theta -> dict``, optional
        Extra metrics logged after each epoch (e.g. accuracy).

    Returns
    -------
    FitResult
    """
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise PhysgradError(f"X and Y must be 2-D with the same number of rows, got {X.shape} and {Y.shape}")
    rng = np.random.default_rng(config.seed)
    n = X.shape[0]
    bs = n if config.batch_size is None else min(int(config.batch_size), n)
    history = []

    def full_cost(th):
        return float(mean_cost(energy, minimizer.minimize(energy, th, X).state, Y))

    state = optim.init(config.optimizer, theta)
    t0 = time.perf_counter()
    first = {"epoch": 0, "cost": full_cost(theta), "seconds": 0.0, **(metrics(theta) if metrics else {})}
    history.append(first)
    if progress:
        progress(first)
    for epoch in range(1, int(config.epochs) + 1):
        order = rng.permutation(n) if bs < n else np.arange(n)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            g = estimator.estimate(energy, theta, X[idx], Y[idx], minimizer)
            theta, state = optim.step(config.optimizer, theta, g, state, config.lr, betas=config.adam_betas)
            theta = energy.project(theta)
            if config.g_min > 0:
                theta = tree_map(lambda p: np.maximum(p, config.g_min), theta)
        rec = {"epoch": epoch, "cost": full_cost(theta), "seconds": time.perf_counter() - t0,
               **(metrics(theta) if metrics else {})}
        history.append(rec)
        if progress:
            progress(rec)
    return FitResult(theta, tuple(history))
