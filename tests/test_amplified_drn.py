"""Deep resistive networks with Kendall amplifiers between layers (issue 10, item 5).

The energy, block update, fixed point and EP estimator of ``DeepResistive(amplifier_gains=...)``
against: the pre-amplifier formulas (gains 1, bit for bit), the closed-form KCL, the circuit core
on the lowered circuit with E/F elements, the plain DRN it reparametrises, and finite differences
of the loss; plus the preset, training and error paths.
"""
import json

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad as ag_grad

from physgrad.circuit.solve import solve
from physgrad.energies.layered import DeepResistive
from physgrad.layered import fused
from physgrad.layered.presets import PRESETS, Preset, get_preset
from physgrad.layered.train import TrainConfig, load_checkpoint, train
from physgrad.learning import EquilibriumPropagation, ExactGradient
from physgrad.learning.cost import mean_cost
from physgrad.minimizers.block import BlockCoordinateDescent
from physgrad.types import FREE, Nudge, PhysgradError

EXACT = BlockCoordinateDescent(sweeps=20000, tol=1e-15)


def net(gains=(2.0, 0.5), g=2.0, sizes=(3, (4, 6), 2), seed=0, bias=0.1, batch=3):
    """A small amplified DRN, parameters with random biases, inputs and one-hot-like targets."""
    n_in, hidden, n_out = sizes
    en = DeepResistive(n_in, hidden, n_out, input_gain=g, amplifier_gains=gains)
    rng = np.random.default_rng(seed)
    th = en.init_theta(rng)
    L = en.n_layers
    th = tuple(W + 0.02 for W in th[:L]) + tuple(rng.normal(size=b.shape) * bias for b in th[L:])  # no floating unit
    x = rng.uniform(size=(batch, n_in))
    y = rng.uniform(size=(batch, n_out))
    return en, th, x, y


def random_state(en, batch, rng):
    return tuple(rng.normal(size=(batch, n)) for n in en.sizes[1:])


# --- gains 1: the plain DRN, bit for bit -----------------------------------------------------------------
def _old_block_solve(en, k, state, theta, x, nudge):
    """The DRN block update as it was before amplifiers (copied), for the bit-for-bit check."""
    Ws, bs = en.split(theta)
    layers = [en.input_layer(x)] + list(state)
    L = en.n_layers
    num = anp.dot(layers[k - 1], Ws[k - 1]) + bs[k - 1]
    den = anp.sum(Ws[k - 1], axis=0)
    if k < L:
        num = num + anp.dot(layers[k + 1], Ws[k].T)
        den = den + anp.sum(Ws[k], axis=1)
    if k == L and nudge.beta:
        num = num + nudge.beta * np.broadcast_to(nudge.target, num.shape)
        den = den + nudge.beta
    s = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    if k < L:
        half = en.sizes[k] // 2
        s = np.concatenate([np.maximum(s[:, :half], 0.0), np.minimum(s[:, half:], 0.0)], axis=1)
    return s


def _old_energy(en, state, theta, x):
    Ws, bs = en.split(theta)
    layers = [en.input_layer(x)] + list(state)
    E = 0.0
    for k, (W, b) in enumerate(zip(Ws, bs), start=1):
        a, h = layers[k - 1], layers[k]
        E = E + 0.5 * np.dot(a * a, np.sum(W, axis=1)) + 0.5 * np.dot(h * h, np.sum(W, axis=0)) \
            - np.sum(np.dot(a, W) * h, axis=1) - np.dot(h, b)
    return E


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unit_gains_are_the_plain_drn_bit_for_bit(dtype):
    en1, th, x, y = net(gains=(1.0, 1.0))
    en0 = DeepResistive(3, (4, 6), 2, input_gain=2.0)
    assert en1 == en0 and en0.amplifier_gains == (1.0, 1.0) and not en0.amplified
    assert en0.island_weights == (1.0, 1.0, 1.0)
    th = tuple(t.astype(dtype) for t in th)
    x = x.astype(dtype)
    s = tuple(a.astype(dtype) for a in random_state(en0, 3, np.random.default_rng(1)))
    for nudge in (FREE, Nudge(0.5, target=y.astype(dtype))):
        for k in (1, 2, 3):
            new = en1.block_solve(k, s, th, x, nudge)
            np.testing.assert_array_equal(new, _old_block_solve(en0, k, s, th, x, nudge))
    np.testing.assert_array_equal(en1.energy(s, th, x), _old_energy(en0, s, th, x))
    eq1 = BlockCoordinateDescent(sweeps=7, tol=None).minimize(en1, th, x)
    eq0 = BlockCoordinateDescent(sweeps=7, tol=None).minimize(en0, th, x)
    for a, b in zip(eq1.state, eq0.state):
        np.testing.assert_array_equal(a, b)


def test_unit_gains_train_bit_for_bit(data_dir, tmp_path):
    base = dict(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=8, threads=1, engine="generic")
    train(TrainConfig(**base), tmp_path / "a", progress=False)
    train(TrainConfig(**base, amplifier_gains=(1.0,)), tmp_path / "b", progress=False)
    for p, q in zip(load_checkpoint(tmp_path / "a" / "checkpoint.npz")["params"],
                    load_checkpoint(tmp_path / "b" / "checkpoint.npz")["params"]):
        np.testing.assert_array_equal(p, q)


# --- the block update and the fixed point ----------------------------------------------------------------
def test_block_update_is_the_closed_form():
    en, th, x, y = net()
    Ws, bs = en.split(th)
    A = {1: 1.0, 2: 2.0, 3: 0.5}
    rng = np.random.default_rng(2)
    s = random_state(en, 3, rng)
    layers = [en.input_layer(x)] + list(s)
    for k in (1, 2, 3):
        num = A[k] * layers[k - 1] @ Ws[k - 1] + bs[k - 1]
        den = Ws[k - 1].sum(0)
        if k < 3:
            num = num + (layers[k + 1] @ Ws[k].T) / A[k + 1]
            den = den + Ws[k].sum(1)
        else:
            num, den = num + 0.7 * y, den + 0.7
        v = num / den
        if k < 3:
            half = en.sizes[k] // 2
            v = np.concatenate([np.maximum(v[:, :half], 0), np.minimum(v[:, half:], 0)], axis=1)
        np.testing.assert_allclose(en.block_solve(k, s, th, x, Nudge(0.7, target=y)), v, rtol=1e-14, atol=1e-15)


def _kcl(en, state, theta, x):
    """Net current out of every unit by KCL (A), ``(batch, n_k)`` per layer (diode currents not included)."""
    Ws, bs = en.split(theta)
    layers = [en.input_layer(x)] + list(state)
    out = []
    for k in range(1, en.n_layers + 1):
        A = en.gain(k)
        i = layers[k] * Ws[k - 1].sum(0) - A * layers[k - 1] @ Ws[k - 1] - bs[k - 1]
        if k < en.n_layers:  # 1/A_{k+1} of the current the next amplifier delivers into W_{k+1}
            A1 = en.gain(k + 1)
            i = i + (A1 * layers[k] * Ws[k].sum(1) - layers[k + 1] @ Ws[k].T) / A1
        out.append(i)
    return out


def test_fixed_point_satisfies_kcl_and_matches_the_circuit_core():
    en, th, x, y = net(seed=3)
    eq = EXACT.minimize(en, th, x)
    assert eq.status == "converged"
    for k, (s, i) in enumerate(zip(eq.state, _kcl(en, eq.state, th, x)), start=1):
        if k == en.n_layers:
            np.testing.assert_allclose(i, 0.0, atol=1e-13)
            continue
        half = en.sizes[k] // 2
        free = s != 0
        np.testing.assert_allclose(i[free], 0.0, atol=1e-13)
        # a unit held at 0 V by its diode: the diode supplies current of the right sign
        assert np.all(i[:, :half][~free[:, :half]] >= -1e-13) and np.all(i[:, half:][~free[:, half:]] <= 1e-13)
    assert any(np.any(s == 0) for s in eq.state[:-1]) and any(np.any(s != 0) for s in eq.state[:-1])
    # the energy is stationary exactly where KCL holds: dE/ds_k = c_k * KCL_k
    flat = [a for a in eq.state]
    g = ag_grad(lambda st: anp.sum(en.energy(tuple(st), th, x)))(flat)
    for gk, i, c in zip(g, _kcl(en, eq.state, th, x), en.island_weights):
        np.testing.assert_allclose(gk, c * i, atol=1e-13)
    # the lowered circuit (E + 0 V sense + F per unit) solved by the circuit core
    for b in range(len(x)):
        circuit = en.to_circuit(th, x[b:b + 1])
        assert sum(type(e).__name__ == "VCVS" for e in circuit.elements) == 4 + 6
        ref = en.state_from_solution(solve(circuit))
        for a, r in zip(eq.state, ref):
            np.testing.assert_allclose(a[b:b + 1], r, atol=1e-12)


def test_amplifiers_reparametrise_the_plain_drn_sweep_by_sweep():
    """s_k = (P_k/P_L) s'_k where s' is the plain DRN with input gain g P_L and biases b_k P_L/P_k."""
    gains, g = (2.0, 0.5), 2.0
    en, th, x, y = net(gains=gains, g=g)
    P = [1.0, 2.0, 1.0]  # P_k = prod_{m<=k} A_m
    PL = P[-1] * 1.0
    plain = DeepResistive(3, (4, 6), 2, input_gain=g * PL)
    Ws, bs = en.split(th)
    th_p = Ws + tuple(b * PL / p for b, p in zip(bs, P))
    for sweeps in (1, 3):
        for nudge in (FREE, Nudge(0.3, target=y)):
            s = BlockCoordinateDescent(sweeps=sweeps, tol=None).minimize(en, th, x, nudge=nudge).state
            sp = BlockCoordinateDescent(sweeps=sweeps, tol=None).minimize(plain, th_p, x, nudge=nudge).state
            for a, b, p in zip(s, sp, P):
                np.testing.assert_allclose(a, (p / PL) * b, rtol=1e-12, atol=1e-14)
    s = EXACT.minimize(en, th, x).state
    sp = EXACT.minimize(plain, th_p, x).state
    gr, gp = en.theta_grad(s, th, x), plain.theta_grad(sp, th_p, x)
    for k in range(3):
        np.testing.assert_allclose(gr[k], gp[k], rtol=1e-10, atol=1e-14)  # dE/dW equal
        np.testing.assert_allclose(gr[3 + k], (PL / P[k]) * gp[3 + k], rtol=1e-10, atol=1e-14)  # chain rule on b


# --- the estimator against the exact gradient ------------------------------------------------------------
def finite_difference_gradient(en, th, x, y, h=1e-6):
    """Central differences of the mean cost at the exact fixed point (KCL only, no energy used)."""
    out = []
    for t_i, t in enumerate(th):
        g = np.zeros_like(t)
        for idx in np.ndindex(t.shape):
            vals = []
            for sgn in (1, -1):
                tt = [a.copy() for a in th]
                tt[t_i][idx] += sgn * h
                vals.append(float(mean_cost(en, EXACT.minimize(en, tuple(tt), x).state, y)))
            g[idx] = (vals[0] - vals[1]) / (2 * h)
        out.append(g)
    return tuple(out)


def rel_err(a, b):
    fa = np.concatenate([np.ravel(t) for t in a])
    fb = np.concatenate([np.ravel(t) for t in b])
    return float(np.linalg.norm(fa - fb) / np.linalg.norm(fb))


def estimator_errors(gains, betas=(0.01, 0.001), seed=4):
    """``(exact vs finite differences, {beta: (P-EP error, C-EP error)})``: relative L2 errors."""
    en, th, x, y = net(gains=gains, sizes=(3, (4, 4), 2), seed=seed, bias=0.05, batch=2)
    exact = ExactGradient().estimate(en, th, x, y, EXACT)
    fd = finite_difference_gradient(en, th, x, y)
    errs = {}
    for beta in betas:
        pep = EquilibriumPropagation(beta=beta, variant="positive").estimate(en, th, x, y, EXACT)
        cep = EquilibriumPropagation(beta=beta, variant="centered").estimate(en, th, x, y, EXACT)
        errs[beta] = (rel_err(pep, exact), rel_err(cep, exact))
    return rel_err(exact, fd), errs


@pytest.mark.parametrize("gains", [(3.0, 2.0), (0.5, 4.0)])
def test_centered_ep_with_island_factors_matches_the_exact_gradient(gains):
    exact_vs_fd, errs = estimator_errors(gains)
    assert exact_vs_fd < 1e-7  # implicit differentiation of the weighted energy == d(loss)/d(theta) by KCL
    (p1, c1), (p2, c2) = errs[0.01], errs[0.001]  # measured: c2 ~ 1.2e-5, p2 ~ 3e-3 (estimator_bias.py)
    assert c2 < 3e-5 and p2 < 1e-2
    assert 50 < c1 / c2 < 200  # C-EP bias O(beta^2): a 10x smaller beta, ~100x smaller error
    assert 5 < p1 / p2 < 20  # P-EP bias O(beta)


def test_without_the_island_factors_ep_is_wrong():
    """The factors matter: the plain DRN's local rule (c_k = 1) on the amplified circuit is biased."""
    en, th, x, y = net(gains=(3.0, 2.0), sizes=(3, (4, 4), 2), seed=4, bias=0.05, batch=2)
    exact = ExactGradient().estimate(en, th, x, y, EXACT)
    cep = EquilibriumPropagation(beta=0.01).estimate(en, th, x, y, EXACT)
    c = en.island_weights
    assert c == (36.0, 4.0, 1.0)
    unweighted = tuple(g / c[k % 3] for k, g in enumerate(cep))
    assert rel_err(cep, exact) < 2e-3  # measured 1.15e-3 (estimator_bias.py)
    assert rel_err(unweighted[:1], exact[:1]) > 0.9  # W_1's estimate 36 times too small
    assert rel_err(unweighted[1:2], exact[1:2]) > 0.7  # W_2's 4 times


# --- presets, training, errors ---------------------------------------------------------------------------
def test_presets_and_training_with_amplifiers(data_dir, tmp_path):
    p = get_preset("drn-2h-amp")
    assert p.amplifier_gains == (2.0, 2.0) and p.input_gain == 480.0 and p.energy().amplified
    assert get_preset("drn-3h-amp").energy().island_weights == (64.0, 16.0, 4.0, 1.0)
    assert PRESETS["drn-2h"].amplifier_gains == () and Preset("t", "drn", (4,), amplifier_gains=(1,),
                                                               weight_lrs=(1, 1)).amplifier_gains == ()
    cfg = TrainConfig(preset="drn-xs", data_dir=data_dir, epochs=1, train_size=8, threads=1, input_gain=25.0,
                      amplifier_gains=(4.0,))
    assert cfg.resolved_engine == "fast" and cfg.plan.amplified and cfg.resolved_preset.energy().amplifier_gains == (4.0,)
    m = train(cfg, tmp_path / "amp", progress=False)
    assert len(m) == 1
    saved = json.loads((tmp_path / "amp" / "config.json").read_text())
    assert saved["preset"]["amplifier_gains"] == [4.0] and saved["preset"]["input_gain"] == 25.0
    assert TrainConfig.from_dict(saved["config"]) == cfg  # the resume path reads it back
    m2 = train(TrainConfig(**{**saved["config"], "epochs": 2}), tmp_path / "amp", resume=True, progress=False)
    assert len(m2) == 2


def test_bad_gains_are_clear_errors(data_dir, tmp_path, capsys):
    for gains, match in [((0.0,), "finite and > 0"), ((-2.0,), "finite and > 0"), ((np.nan,), "finite and > 0"),
                         ((np.inf,), "finite and > 0"), ((2.0, 2.0), "one gain per connection"),
                         ("2", "tuple"), (("a",), "numbers"), (2.0, "tuple")]:
        with pytest.raises(PhysgradError, match=match):
            DeepResistive(3, (4,), 2, amplifier_gains=gains)
    with pytest.raises(PhysgradError, match="DRN option"):
        Preset("h", "dhn", (4,), amplifier_gains=(2.0,), weight_lrs=(1, 1))
    with pytest.raises(PhysgradError, match="one gain per connection"):
        TrainConfig(preset="drn-2h", amplifier_gains=(2.0,))
    with pytest.raises(PhysgradError, match="generic engine"):
        fused.FusedSpec(get_preset("drn-2h-amp").energy())
    with pytest.raises(PhysgradError, match="on the torch backend: use --backend numba or numpy"):
        TrainConfig(preset="drn-2h-amp", backend="torch")
    from physgrad.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "drn-2h", "--amplifier-gains", "2,x"])
    assert exc.value.code == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main(["train", "--preset", "drn-2h", "--amplifier-gains", "2,0", "--out", str(tmp_path / "z")]) == 2
    assert "finite and > 0" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm", ["cep", "tbp"])
def test_training_with_amplifiers_is_training_the_rescaled_plain_drn(algorithm):
    """Steps on the amplified network = steps on the plain DRN with input gain g A (one hidden layer,
    P = (1, A)), biases b_1 A and bias learning rate of layer 1 times A^2 (float64, 3 steps), for C-EP
    (with the island factors) and truncated BP alike: amplifiers cannot change the EP-TBP gap beyond
    what an input gain and bias learning rates do."""
    from physgrad.layered.steppers import RuleStepper

    A, g = 3.0, 2.0
    common = dict(model="drn", hidden=(4,), n_outputs=3, sweeps=4, beta=0.1, weight_lrs=(0.05, 0.05))
    amp = Preset("amp", input_gain=g, amplifier_gains=(A,), bias_lrs=(0.01, 0.02), **common)
    plain = Preset("plain", input_gain=g * A, bias_lrs=(0.01 * A ** 2, 0.02), **common)
    rng = np.random.default_rng(5)
    th = amp.energy().init_theta(rng)
    th = tuple(W + 0.01 for W in th[:2]) + (rng.normal(size=4) * 0.1, rng.normal(size=3) * 0.1)
    x, y = rng.uniform(size=(8, 784)), rng.integers(0, 3, size=8)
    sa = RuleStepper(amp, algorithm, th)
    sp = RuleStepper(plain, algorithm, th[:2] + (th[2] * A, th[3]))
    wa = wp = None
    try:
        for step in range(3):
            idx = np.arange(4 * (step % 2), 4 * (step % 2) + 4)
            wa, pa = sa.step(x, idx, y[idx], None, wa, 1.0)
            wp, pp = sp.step(x, idx, y[idx], None, wp, 1.0)
            np.testing.assert_array_equal(pa, pp)
            np.testing.assert_allclose(wa[0], wp[0] / A, rtol=1e-10, atol=1e-13)  # s_1 = (P_1/P_L) s'_1
            np.testing.assert_allclose(wa[1], wp[1], rtol=1e-10, atol=1e-13)
    finally:
        sa.close(), sp.close()
    (W1, W2, b1, b2), (V1, V2, c1, c2) = sa.params, sp.params
    np.testing.assert_allclose(W1, V1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(W2, V2, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(b1 * A, c1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(b2, c2, rtol=1e-10, atol=1e-13)
    assert not np.allclose(W2, th[1])  # it did learn


# the numba cases compile a float64 2-hidden-layer kernel (~30 s of CPU with a cold cache): slow run; the
# wrapper's mapping is the same code on the numpy kernel, and numba equals numpy in test_kernels_numba
@pytest.mark.parametrize("backend,optimizer,algorithm", [pytest.param("numba", "sgd", "cep", marks=pytest.mark.slow),
                                                         pytest.param("numba", "adam", "cep", marks=pytest.mark.slow),
                                                         ("numpy", "sgd", "cep"), ("numpy", "momentum", "cep"),
                                                         ("numpy", "sgd", "tbp")])
def test_fast_engine_on_amplifiers_equals_the_generic_engine(backend, optimizer, algorithm):
    """The fast engine runs an amplified DRN as the reparametrised plain DRN (AmplifiedStepper): over
    four batches (float64) it gives the generic engine's predictions, warm starts, parameters,
    optimizer state and evaluation, all in the amplified network's coordinates (C-EP on the compiled
    and numpy kernels with SGD, momentum, Adam; truncated backprop on the numpy kernel)."""
    from physgrad.layered.presets import MNIST_PIXELS
    from physgrad.layered.steppers import AmplifiedStepper, make_stepper
    from stepper_pairs import step_side_by_side

    if backend == "numba":
        pytest.importorskip("numba")
    lrs = dict(weight_lrs=(1e-3,) * 3, bias_lrs=(1e-3,) * 3) if optimizer == "adam" else \
        dict(weight_lrs=(0.1, 0.1, 0.1), bias_lrs=(0.05, 0.2, 0.1))
    amp = Preset("amp", "drn", (16, 12), input_gain=3.0, amplifier_gains=(2.0, 0.5), sweeps=3, beta=0.05,
                 optimizer=optimizer, **lrs)
    rng = np.random.default_rng(3)
    th = amp.energy().init_theta(rng, 1.0, np.dtype(np.float64))
    th = th[:3] + tuple(rng.normal(size=b.shape) * 0.1 for b in th[3:])
    x = rng.random((16, MNIST_PIXELS))
    x[x < 0.7] = 0
    y = rng.integers(0, 10, len(x))
    generic = make_stepper("generic", amp, algorithm, tuple(a.copy() for a in th))
    fast = make_stepper("fast", amp, algorithm, tuple(a.copy() for a in th), backend=backend)
    assert isinstance(fast, AmplifiedStepper) and fast.r == (1.0, 0.5, 1.0)
    try:
        step_side_by_side(generic, fast, x, y, rtol=1e-8, atol=1e-10)
        for u, v, u0 in zip(generic.params, fast.to_host(), th):
            assert not np.allclose(u, u0)  # it learned
            np.testing.assert_allclose(v, u, rtol=1e-8, atol=1e-10)
        sa, sb = generic.state_arrays(), fast.state_arrays()
        assert sorted(sa) == sorted(sb)
        for key in sa:
            np.testing.assert_allclose(sb[key], sa[key], rtol=1e-7, atol=1e-12)
        np.testing.assert_array_equal(fast.evaluate(fast.params, x), generic.evaluate(generic.params, x))
    finally:
        generic.close(), fast.close()
