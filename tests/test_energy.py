"""Physical energy of an EP step: RC settling, programming energy against the preset's formula,
crossbar read energy against a solved circuit, and the crossbar network with ideal devices against
the ideal network."""
import numpy as np
import pytest

from physgrad.circuit.elements import Circuit, Resistor, VoltageSource
from physgrad.circuit.power import phase_energy, settling_time
from physgrad.circuit.solve import solve
from physgrad.devices.energy import TAOX_WRITE, WRITE_ENERGY, WriteEnergy, programming_energy, pulse_counts
from physgrad.devices.model import Device
from physgrad.devices.pieces import Bounds, DifferentialPair
from physgrad.devices.presets import get_device
from physgrad.layered.crossbar import (CrossbarLayout, CrossbarPhysics, CrossbarTrainer, crossbar_device, load_digits, one_hot,
                                       read_energy, train_crossbar)
from physgrad.types import PhysgradError


def test_programming_energy_hand_computed():
    w = WriteEnergy(v_write=1.0, t_write=100e-9)
    gb = np.array([10e-6, 50e-6, 20e-6])
    ga = np.array([12e-6, 44e-6, 20e-6])
    # pulses: 1, 3, 0 of 2 uS; each V^2 G t with G before the update
    want = 1 * 1.0 * 10e-6 * 100e-9 + 3 * 1.0 * 50e-6 * 100e-9
    assert programming_energy(gb, ga, w, pulse_step=2e-6) == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(pulse_counts(gb, ga, 2e-6), [1, 3, 0], rtol=1e-12, atol=1e-12)
    # A 1.5 V, 50 ns preset (pcm-pair's stated formula) on one device: 4 pulses at 30 uS.
    pcm = WRITE_ENERGY["pcm-pair"]
    assert programming_energy([30e-6], [38e-6], pcm, 2e-6) == pytest.approx(4 * 1.5 ** 2 * 30e-6 * 50e-9, rel=1e-12)
    # Continuous devices: J per siemens of |dG|.
    c = WriteEnergy(joules_per_siemens=1e-6)
    assert programming_energy(gb, ga, c) == pytest.approx(1e-6 * 8e-6, rel=1e-12)
    assert programming_energy(gb, ga, WRITE_ENERGY["ideal"]) == 0.0
    with pytest.raises(PhysgradError):
        programming_energy(gb, ga, w, pulse_step=0.0)
    with pytest.raises(PhysgradError):
        WriteEnergy(v_write=-1.0)
    assert TAOX_WRITE.pulse_energy(50e-6) == pytest.approx(1.0 * 50e-6 * 100e-9, rel=1e-15)


def test_settling_and_phase_energy():
    assert settling_time(1e-12, 1e-3, 5.0) == pytest.approx(5e-9, rel=1e-15)
    assert phase_energy(2e-3, 5e-9, 1e-12, [0.1, 0.2]) == pytest.approx(2e-3 * 5e-9 + 1e-12 * 0.05, rel=1e-12)
    with pytest.raises(ValueError):
        settling_time(1e-12, 0.0)


def test_read_energy_matches_solved_circuit():
    """The Joule term of a crossbar read equals the power physgrad's solver finds in the same circuit."""
    rng = np.random.default_rng(3)
    g = rng.uniform(1e-6, 1e-4, size=(4, 3))
    v = rng.uniform(0, 0.2, size=4)
    els = [VoltageSource(f"v{i}", f"row{i}", "0", v[i]) for i in range(4)]
    els += [VoltageSource(f"vc{j}", f"col{j}", "0", 0.0) for j in range(3)]  # virtual ground
    els += [Resistor(f"r{i}_{j}", f"row{i}", f"col{j}", g[i, j]) for i in range(4) for j in range(3)]
    sol = solve(Circuit(tuple(els)))
    phys = CrossbarPhysics(node_capacitance=0.0)  # Joule term only; t_s = k C / G_min -> use C below
    phys_c = CrossbarPhysics(node_capacitance=1e-12, settling_multiple=5.0)
    t_s = 5.0 * 1e-12 / g.sum(axis=0).min()
    e = read_energy(g, v, 0, phys_c)
    assert e == pytest.approx(sol.power * t_s + 1e-12 * np.sum(v ** 2), rel=1e-9)
    assert read_energy(g, v, 0, phys) == 0.0  # no capacitance: settles at once, charges nothing
    # Driving the columns instead (axis 1) is the transpose.
    assert read_energy(g.T, v, 1, phys_c) == pytest.approx(e, rel=1e-12)


def _small_run(device, steps=6):
    X, y = load_digits()
    lay = CrossbarLayout()
    t = CrossbarTrainer(lay, device, CrossbarPhysics(write=TAOX_WRITE), beta=0.2, lr=(0.2, 0.1), seed=1)
    train_crossbar(t, X[: 10 * steps], y[: 10 * steps], 1, 10, seed=0, account=True)
    return t


def test_crossbar_with_ideal_device_equals_ideal_network():
    ideal = _small_run(Device(name="ideal"))
    # The ideal network trained by hand: theta <- theta - lr * EP estimate, same batches.
    X, y = load_digits()
    ref = CrossbarTrainer(CrossbarLayout(), Device(name="ideal"), CrossbarPhysics(), beta=0.2, lr=(0.2, 0.1), seed=1)
    theta = ref.theta
    order = np.random.default_rng([0, 2]).permutation(60)
    for i in range(0, 60, 10):
        idx = order[i:i + 10]
        g = ref.rule.estimate(ref.energy_fn, theta, X[:60][idx], one_hot(y[:60][idx]), ref.minimizer)
        theta = tuple(a - lr * d for a, d, lr in zip(theta, g, (0.2, 0.1, 0.2, 0.1)))
    for a, b in zip(ideal.theta, theta):
        np.testing.assert_array_equal(a, b)
    # A crossbar of differential pairs with continuous, unbounded devices holds the same weights.
    pair = _small_run(Device(name="pair", bounds=Bounds(0.0, 1e6), pair=DifferentialPair()))
    for a, b in zip(pair.theta, theta):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    (g1p, g1m), _ = pair.conductances()
    assert np.all(g1p >= 0) and np.all(g1m >= 0)
    np.testing.assert_allclose((g1p - g1m) / pair.units[0], pair.theta[0], rtol=0, atol=1e-12)
    assert all(r["program_J"] == 0.0 for r in ideal.energy_log)  # ideal devices: no write energy stated
    assert all(r["read_free_J"] > 0 and r["read_nudged_J"] > 0 for r in ideal.energy_log)


def test_crossbar_programming_energy_counts_pulses():
    """Constant-step devices move by whole pulses: the counted pulses are integers, and the step's
    energy is sum n V^2 G t over both devices of every pair."""
    X, y = load_digits()
    t = CrossbarTrainer(CrossbarLayout(), crossbar_device(get_device("levels64-nearest")),
                        CrossbarPhysics(write=TAOX_WRITE), beta=0.2, lr=(0.2, 0.1), seed=1)
    before = t.conductances()
    rec = t.step(X[:10], one_hot(y[:10]))
    after = t.conductances()
    want, total = 0.0, 0
    for i in range(2):
        step = t.state.leaves[i].dw0 * t.units[i]
        for gb, ga in zip(before[i], after[i]):
            n = pulse_counts(gb, ga, step)
            np.testing.assert_allclose(n, np.rint(n), atol=1e-6)
            total += int(np.rint(n).sum())
            want += float(np.sum(np.rint(n) * 1.0 ** 2 * gb * 100e-9))
    assert total > 0
    assert rec["program_J"] * 10 == pytest.approx(want, rel=1e-6)


def test_layout_must_fit():
    with pytest.raises(PhysgradError):
        CrossbarLayout(hidden=30)
    assert CrossbarLayout().devices_used == 2 * (64 * 22 + 22 * 10) <= 64 * 64


def test_physical_nudge_equals_ep_nudge_and_step_energy():
    from physgrad.circuit.elements import IdealDiode
    from physgrad.netlists.energy import ep_step_energy, nudged_circuit
    from physgrad.types import Nudge
    c = Circuit((VoltageSource("vin", "in", "0", 1.0), Resistor("r1", "in", "h", 2e-3), Resistor("r2", "h", "0", 1e-3),
                 IdealDiode("d1", "h", "out", 0.1), Resistor("r3", "out", "0", 5e-4), Resistor("r4", "h", "out", 1e-4)))
    beta, y = 2e-4, [0.05]
    phys = solve(nudged_circuit(c, ["out"], y, beta))
    ref = solve(c, nudge=Nudge(beta, target=np.array(y)), outputs=["out"])
    for n in c.nodes:
        assert phys.voltage(n) == pytest.approx(ref.voltage(n), abs=1e-12)
    assert phys.power_balance.relative <= 1e-9
    e = ep_step_energy(c, ["out"], y, beta, node_capacitance=1e-12, k=5.0,
                       g_before=np.array([1e-5]), g_after=np.array([1.4e-5]), write=TAOX_WRITE, pulse_step=1e-6, batch=2)
    free = solve(c)
    g_min = min(2e-3 + 1e-3 + 1e-4, 5e-4 + 1e-4)  # nodes h, out (node in is held by vin)
    t = 5.0 * 1e-12 / g_min
    assert e.settling_time == pytest.approx(t, rel=1e-12)
    assert e.free == pytest.approx(free.power * t + 1e-12 * np.sum(free.voltages ** 2), rel=1e-12)
    nud = solve(nudged_circuit(c, ["out"], y, beta))  # out gains beta; nudge_0 is held by its source
    t_n = 5.0 * 1e-12 / (5e-4 + 1e-4 + beta)
    assert e.nudged == pytest.approx(nud.power * t_n + 1e-12 * np.sum(nud.voltages ** 2), rel=1e-12)
    assert e.programming == pytest.approx(4 * 1.0 * 1e-5 * 100e-9 / 2, rel=1e-12)
    assert e.total == pytest.approx(e.free + e.nudged + e.programming)
    with pytest.raises(PhysgradError):
        nudged_circuit(c, ["out"], y, -1e-3)
