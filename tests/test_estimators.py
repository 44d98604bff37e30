"""scikit-learn estimators: parameters, Pipeline, cross_val_score, and predictions against independent
solves of the trained netlist."""
import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed: pip install 'physgrad[sklearn]' "
                                                "(CI installs it with the test extra)")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import physgrad  # noqa: E402
from physgrad.circuit.netlist import parse_netlist  # noqa: E402
from physgrad.circuit.solve import solve  # noqa: E402


def test_params_round_trip_and_clone():
    clf = physgrad.CircuitClassifier(hidden=3, epochs=4, method="exact")
    p = clf.get_params()
    assert p["hidden"] == 3 and p["epochs"] == 4 and p["method"] == "exact" and "lr" in p
    clf.set_params(epochs=7, lr=1e-4)
    assert clf.epochs == 7 and clone(clf).get_params() == clf.get_params()
    pipe = make_pipeline(StandardScaler(), clf)
    pipe.set_params(circuitclassifier__hidden=2)
    assert clf.hidden == 2


@pytest.mark.slow  # > 1.3 s of CPU (measured); the default run's budget is 150 s
def test_classifier_in_cross_val_score_and_predictions_match_the_netlist():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), physgrad.CircuitClassifier(epochs=5, hidden=2, seed=1))
    scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.all(scores > 0.6)  # chance is 1/3
    pipe.fit(X, y)
    clf = pipe[-1]
    assert list(clf.classes_) == [0, 1, 2] and clf.history_[-1]["train_cost"] < clf.history_[0]["train_cost"]
    Z = pipe[0].transform(X[::25])
    # independent route: the trained netlist text, one circuit-core solve per sample
    c = parse_netlist(clf.netlist_)
    v = []
    for z in Z:
        src = {f"vx{i + 1}": z[i] for i in range(4)} | {f"vx{i + 1}n": -z[i] for i in range(4)}
        sol = solve(c.with_sources(src))
        v.append([sol.voltage(f"o{k}") for k in (1, 2, 3)])
    np.testing.assert_allclose(clf.decision_function(Z), v, rtol=0, atol=1e-9)
    assert np.array_equal(pipe.predict(X[::25]), np.argmax(v, axis=1))
    with pytest.raises(physgrad.PhysgradError):
        clf.predict(Z[:, :3])


def test_regressor_fits_a_linear_target():
    X, _ = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X[:, :3])
    t = 0.3 * X[:, 2] - 0.1 * X[:, 0] + 0.2  # volts
    scores = cross_val_score(physgrad.CircuitRegressor(epochs=8), X, t, cv=KFold(3, shuffle=True, random_state=0))
    assert np.all(scores > 0.8)  # R^2
    reg = physgrad.CircuitRegressor(epochs=3).fit(X, np.column_stack([t, -t]))
    assert reg.predict(X[:5]).shape == (5, 2)


def test_given_netlist_needs_input_names():
    from pathlib import Path

    net = Path(__file__).resolve().parents[1] / "physgrad" / "examples" / "iris" / "iris16.cir"
    X, y = load_iris(return_X_y=True)
    with pytest.raises(physgrad.PhysgradError, match="inputs"):
        physgrad.CircuitClassifier(netlist=str(net), outputs=["o1", "o2", "o3"], epochs=1).fit(X, y)
    clf = physgrad.CircuitClassifier(netlist=str(net), inputs=["vsl", "vsw", "vpl", "vpw"],
                                     outputs=["o1", "o2", "o3"], epochs=2, method="ccpl", lr=2e-5).fit(X, y)
    assert clf.score(X, y) > 0.5
