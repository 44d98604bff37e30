"""Small trainable circuits: XOR and 1-D regression through diode networks, and a 16-edge linear
network on Iris (after Dillavou et al. 2022). Each builder returns ``(circuit, inputs, X, Y)`` ready
for :class:`~physgrad.energies.co_content.CoContentEnergy` and :func:`physgrad.learning.fit`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from physgrad.circuit.elements import Circuit, IdealDiode, Resistor, VoltageSource

IRIS_CSV = Path(__file__).with_name("data") / "iris.csv"
IRIS_CLASSES = ("Iris-setosa", "Iris-versicolor", "Iris-virginica")


def _rectifier_layer(rng, sources, n_hidden, prefix="h", g_range=(0.05, 0.5)):
    """Hidden nodes fed by resistors from every source; half clamp at >= 0 V, half at <= 0 V (ideal diodes)."""
    els, k = [], 0
    for j in range(n_hidden):
        h = f"{prefix}{j + 1}"
        for s in sources:
            k += 1
            els.append(Resistor(f"r{prefix}{k}", s, h, float(rng.uniform(*g_range))))
        els.append(IdealDiode(f"d{prefix}{j + 1}", "0", h) if j < n_hidden // 2 else IdealDiode(f"d{prefix}{j + 1}", h, "0"))
    return els


def xor_task(seed: int = 0, n_hidden: int = 4, y_true: float = 0.1):
    """XOR on a diode network.

    Sources ``vx1p = x1``, ``vx1n = -x1``, ``vx2p = x2``, ``vx2n = -x2`` (inputs: logical 0/1 as -1/+1 V), ``vbp = +1 V``,
    ``vbn = -1 V``; ``n_hidden`` rectifying hidden nodes (resistors from every source); output
    ``out`` with resistors from every hidden node and both biases. Target ``+y_true`` V when
    ``x1 != x2``, ``-y_true`` V otherwise. Every resistor is trainable.
    """
    rng = np.random.default_rng(seed)
    srcs = ["x1p", "x1n", "x2p", "x2n", "bp", "bn"]
    els = [VoltageSource(f"v{s}", s, "0", 0.0) for s in srcs[:4]]
    els += [VoltageSource("vbp", "bp", "0", 1.0), VoltageSource("vbn", "bn", "0", -1.0)]
    els += _rectifier_layer(rng, srcs, n_hidden)
    for k, s in enumerate([f"h{j + 1}" for j in range(n_hidden)] + ["bp", "bn"]):
        els.append(Resistor(f"ro{k + 1}", s, "out", float(rng.uniform(0.05, 0.5))))
    circuit = Circuit(tuple(els), "XOR diode network", targets={"out": 0.0})
    X01 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    V = 2 * X01 - 1  # logical 0/1 as -1/+1 V
    X = np.column_stack([V[:, 0], -V[:, 0], V[:, 1], -V[:, 1]])
    Y = np.where(X01[:, 0] != X01[:, 1], y_true, -y_true)[:, None]
    return circuit, ("vx1p", "vx1n", "vx2p", "vx2n"), X, Y


def regression_target(x):
    """The 1-D regression target (V): the parabola ``0.4 x^2 - 0.15`` on ``x`` in [-1, 1] V."""
    return 0.4 * np.asarray(x) ** 2 - 0.15


def regression_task(seed: int = 0, thresholds=(-0.6, -0.2, 0.2, 0.6), n_train: int = 21):
    """1-D nonlinear regression through a diode network.

    Input ``x`` in [-1, 1] V as sources ``vxp = x``, ``vxn = -x``; biases ``vbp = +1 V``,
    ``vbn = -1 V``; threshold sources ``t1..`` at ``thresholds`` (V). For each threshold ``t`` and
    each input polarity there is a hidden node fed by resistors from that input and both biases and
    held at ``>= t`` by an ideal diode from the threshold source (a hinge ``max(., t)``); the output
    ``out`` has resistors from every hidden node and both biases. Target :func:`regression_target`,
    which no linear resistive network can fit (its output is affine in ``x``).
    """
    rng = np.random.default_rng(seed)
    els = [VoltageSource("vxp", "xp", "0", 0.0), VoltageSource("vxn", "xn", "0", 0.0),
           VoltageSource("vbp", "bp", "0", 1.0), VoltageSource("vbn", "bn", "0", -1.0)]
    hidden, k = [], 0
    for i, t in enumerate(thresholds):
        els.append(VoltageSource(f"vt{i + 1}", f"t{i + 1}", "0", float(t)))
        for pol in ("xp", "xn"):
            h = f"h{len(hidden) + 1}"
            hidden.append(h)
            for s in (pol, "bp", "bn"):
                k += 1
                els.append(Resistor(f"rh{k}", s, h, float(rng.uniform(0.05, 0.5))))
            els.append(IdealDiode(f"d{h}", f"t{i + 1}", h))  # v(h) >= t
    for j, s in enumerate(hidden + ["bp", "bn"]):
        els.append(Resistor(f"ro{j + 1}", s, "out", float(rng.uniform(0.05, 0.5))))
    circuit = Circuit(tuple(els), "1-D regression diode network", targets={"out": 0.0})
    x = np.linspace(-1, 1, n_train)
    return circuit, ("vxp", "vxn"), np.column_stack([x, -x]), regression_target(x)[:, None]


def load_iris(path=IRIS_CSV):
    """Iris (Fisher 1936, UCI): features ``(150, 4)`` in cm and labels ``(150,)`` in 0..2."""
    import pandas as pd

    df = pd.read_csv(path)
    X = df.iloc[:, :4].to_numpy(float)
    labels = df["species"].map({c: i for i, c in enumerate(IRIS_CLASSES)}).to_numpy()
    if np.any(pd.isna(labels)) or X.shape != (150, 4):
        raise ValueError(f"{path} is not the 150-row Iris table")
    return X, labels.astype(int)


def dillavou_network(seed: int = 0):
    """A 16-edge linear resistor network for 3-class Iris (after Dillavou et al. 2022).

    Sources: the four features (scaled to 0..1 V) on ``i1..i4`` and a 1 V bias on ``b``. Each output
    ``o1..o3`` (one per class) is joined to the four inputs (12 edges) and to a shared free node ``h``
    (3 edges), which is joined to the bias (1 edge): 16 trainable resistors. The prediction is the
    output with the highest voltage. (The original network was a different 16-edge graph of
    self-adjusting resistors trained by coupled learning; this one keeps its size and linearity.)

    References
    ----------
    S. Dillavou, M. Stern, A. J. Liu, D. J. Durian, "Demonstration of decentralized physics-driven
    learning", Phys. Rev. Applied 18, 014040 (2022).
    """
    rng = np.random.default_rng(seed)
    els = [VoltageSource(f"vin{i}", f"i{i}", "0", 0.0) for i in range(1, 5)]
    els.append(VoltageSource("vbias", "b", "0", 1.0))
    edges = [(f"i{i}", f"o{k}") for k in range(1, 4) for i in range(1, 5)]
    edges += [("h", f"o{k}") for k in range(1, 4)] + [("b", "h")]
    for k, (a, b) in enumerate(edges):
        els.append(Resistor(f"r{k + 1}", a, b, float(rng.uniform(0.2, 1.0))))
    circuit = Circuit(tuple(els), "16-edge Iris network", targets={"o1": 0.0, "o2": 0.0, "o3": 0.0})
    return circuit, ("vin1", "vin2", "vin3", "vin4")
