"""Energy columns of ``physgrad fit`` and ``physgrad train`` (``--energy``), and the crossbar preset.

Independent routes: the logged free/nudged dissipation against each example solved on its own
(``solve``: the sum over elements, and Tellegen's sum over the sources); the programming column
against the preset's formula (``n V^2 G t``) on the run's own update; resumed runs against
uninterrupted ones; the crossbar preset with an ideal device against the plain Hopfield network.
"""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from physgrad.circuit.elements import Circuit, DiodeModel, IdealDiode, Resistor, ShockleyDiode, VoltageSource
from physgrad.circuit.netlist import write_netlist
from physgrad.circuit.power import passive_power, settling_phase
from physgrad.circuit.solve import solve
from physgrad.devices import device_to_dict
from physgrad.devices.model import Device
from physgrad.devices.pieces import Bounds, DifferentialPair
from physgrad.energies.layered import DeepResistive
from physgrad.layered import presets as preset_mod
from physgrad.layered.energy import LayeredEnergyMeter, drn_g_min, drn_power
from physgrad.layered.train import TrainConfig, load_checkpoint, train
from physgrad.netlists.energy import ep_step_energy
from physgrad.netlists.fit import FitSpec, fit_run, init_devices, resolve
from physgrad.runs import load_checkpoint as load_arrays
from physgrad.types import PhysgradError

C, K = 1e-12, 5.0


def _circuit():
    """Two inputs, a threshold diode (vth 0.3 V, so its power is vth * i) and a Shockley diode."""
    m = DiodeModel("dmod", IS=1e-12, N=1.0)
    els = (VoltageSource("vin0", "in0", "0", 0.0), VoltageSource("vin1", "in1", "0", 0.0),
           Resistor("r1", "in0", "a", 2e-3), Resistor("r2", "in1", "a", 1e-3), Resistor("r3", "a", "o1", 1.5e-3),
           Resistor("r4", "a", "o2", 0.5e-3), Resistor("r5", "o1", "0", 1e-3), Resistor("r6", "o2", "0", 2e-3),
           IdealDiode("d1", "a", "0", 0.3), ShockleyDiode("d2", "o1", "o2", m))
    return Circuit(els)


@pytest.fixture()
def task(tmp_path):
    net = tmp_path / "net.cir"
    net.write_text(write_netlist(_circuit()))
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.5, 1.5, (12, 2))
    Y = rng.uniform(-0.2, 0.4, (12, 2))
    lines = ["vin0,vin1,o1,o2"] + [",".join(f"{v:.6f}" for v in np.concatenate([x, y])) for x, y in zip(X, Y)]
    data = tmp_path / "train.csv"
    data.write_text("\n".join(lines) + "\n")
    return {"netlist": str(net), "data": str(data), "inputs": ("vin0", "vin1"), "outputs": ("o1", "o2")}, X, Y


def _rows(folder):
    with open(folder / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_passive_power_is_tellegen_on_a_solved_circuit():
    c = _circuit().with_sources({"vin0": 1.3, "vin1": -0.4})
    sol = solve(c)
    bal = sol.power_balance
    assert sol.current("d1") > 0  # the threshold diode conducts: its vth * i term is exercised
    d1 = [k for k, el in enumerate(c.elements) if isinstance(el, IdealDiode)]
    p = passive_power(c, sol.voltages, diode_currents=np.array([[sol.currents[k] for k in d1]]))
    assert p == pytest.approx(bal.dissipated, rel=1e-9)  # sum over elements
    assert p == pytest.approx(bal.delivered, rel=1e-9)  # Tellegen: the sum over the sources
    with pytest.raises(PhysgradError, match="vth"):
        passive_power(c, sol.voltages)


def test_fit_energy_columns_equal_each_example_solved_alone(task, tmp_path):
    """One batch = the whole set, so epoch 1's free and nudged phases are at the initial conductances:
    the logged means equal ep_step_energy (two solves per example, netlists.energy) averaged."""
    t, X, Y = task
    spec = FitSpec(**t, method="cep", beta=1e-4, epochs=1, batch_size=len(X), energy=True, optimizer="sgd",
                   node_capacitance=C, settling_multiple=K)
    fit_run(spec, tmp_path / "r", progress=False, log=lambda s: None)
    row = _rows(tmp_path / "r")[1]
    assert row["energy_program_J"] == ""  # the ideal device states no write energy: empty, not 0 or NaN
    assert "nan" not in (tmp_path / "r" / "metrics.csv").read_text().lower()
    assert (tmp_path / "r" / "energy.png").exists()
    pb = resolve(spec)
    theta, _ = init_devices(pb)
    circuit = pb.energy.circuit.with_conductances(dict(zip(pb.energy.param_names, theta)))
    free, nudged, tell = [], [], []
    for x, y in zip(X, Y):
        c = circuit.with_sources({"vin0": x[0], "vin1": x[1]})
        e = ep_step_energy(c, ["o1", "o2"], y, 1e-4, node_capacitance=C, k=K)
        free.append(e.free)
        nudged.append(e.nudged)
        sol = solve(c)  # Tellegen: the sources' delivered power in place of the elements' dissipation
        ph = settling_phase(sol, C, K)
        tell.append(sol.power_balance.delivered * ph["settling_time_s"] + C * np.sum(sol.voltages ** 2))
    assert float(row["energy_free_J"]) == pytest.approx(np.mean(free), rel=1e-8)
    assert float(row["energy_free_J"]) == pytest.approx(np.mean(tell), rel=1e-8)
    assert float(row["energy_nudged_J"]) == pytest.approx(np.mean(nudged), rel=1e-8)


def test_fit_programming_column_is_the_presets_formula(task, tmp_path):
    t, X, _ = task
    spec = FitSpec(**t, method="pep", beta=1e-4, epochs=1, batch_size=len(X), energy=True, optimizer="adam",
                   lr=0.05e-3, device_model="reram-sb")
    fit_run(spec, tmp_path / "r", progress=False, log=lambda s: None)
    row = _rows(tmp_path / "r")[1]
    pb = resolve(spec)
    g0, state = init_devices(pb)
    g1 = load_arrays(tmp_path / "r" / "checkpoint.npz", required=("theta",))["theta"]
    dw0 = state.leaves[0].dw0
    want = np.sum(np.abs(g1 - g0) / dw0 * 1.0 ** 2 * g0 * 100e-9) / len(X)  # reram-sb: 1 V, 100 ns pulses
    assert want > 0
    assert float(row["energy_program_J"]) == pytest.approx(want, rel=1e-9)
    # nep has no physical nudged phase: that column is empty
    fit_run(replace(spec, method="nep"), tmp_path / "n", progress=False, log=lambda s: None)
    assert _rows(tmp_path / "n")[1]["energy_nudged_J"] == ""


def test_fit_energy_resumes_to_the_same_columns(task, tmp_path):
    t, X, _ = task
    spec = FitSpec(**t, method="cep", beta=1e-4, epochs=2, batch_size=4, energy=True, device_model="reram-sb")
    rows = fit_run(spec, tmp_path / "i", progress=False, log=lambda s: None, _interrupt_after=4)  # mid-epoch 2
    assert rows.interrupted
    fit_run(spec, tmp_path / "i", resume=True, progress=False, log=lambda s: None)
    fit_run(spec, tmp_path / "f", progress=False, log=lambda s: None)

    def measured(folder):
        return [line.rsplit(",", 1)[0] for line in (folder / "metrics.csv").read_text().splitlines()]

    assert measured(tmp_path / "i") == measured(tmp_path / "f")
    assert "energy_free_J" in measured(tmp_path / "f")[0]


def test_drn_power_is_the_sum_over_edges():
    rng = np.random.default_rng(1)
    e = DeepResistive(3, (4,), 2, input_gain=2.0, amplifier_gains=())
    theta = e.init_theta(rng)
    theta = (np.abs(theta[0]), np.abs(theta[1]), theta[2], theta[3])
    x = rng.uniform(0, 1, (5, 3))
    state = (rng.normal(size=(5, 4)), rng.normal(size=(5, 2)))
    s0 = e.input_layer(x)
    want = np.zeros(5)
    for layer_in, layer_out, W in ((s0, state[0], theta[0]), (state[0], state[1], theta[1])):
        for i in range(W.shape[0]):
            for j in range(W.shape[1]):
                want += W[i, j] * (layer_in[:, i] - layer_out[:, j]) ** 2
    np.testing.assert_allclose(drn_power(e, theta, x, state), want, rtol=1e-12)
    # the same network as a Circuit of resistors between named nodes: passive_power agrees
    names = [f"i{i}" for i in range(6)] + [f"h{j}" for j in range(4)] + [f"o{k}" for k in range(2)]
    els = [Resistor(f"ra{i}_{j}", f"i{i}", f"h{j}", theta[0][i, j]) for i in range(6) for j in range(4)]
    els += [Resistor(f"rb{j}_{k}", f"h{j}", f"o{k}", theta[1][j, k]) for j in range(4) for k in range(2)]
    c = Circuit(tuple(els))
    v = np.concatenate([s0, state[0], state[1]], axis=1)[:, [names.index(n) for n in c.nodes]]
    np.testing.assert_allclose(passive_power(c, v), want, rtol=1e-12)
    g_units = np.concatenate([theta[0].sum(0) + theta[1].sum(1), theta[1].sum(0)])
    assert drn_g_min(e, theta) == pytest.approx(g_units.min(), rel=1e-12)


def test_train_energy_refused_where_undefined():
    with pytest.raises(PhysgradError, match="no physical energy"):
        TrainConfig(preset="dhn-1h", energy=True)
    with pytest.raises(PhysgradError, match="fast engine"):
        TrainConfig(preset="drn-xs", energy=True, engine="fast")
    assert TrainConfig(preset="drn-xs", energy=True).resolved_engine == "generic"
    with pytest.raises(PhysgradError, match="64 inputs"):
        TrainConfig(preset="crossbar-digits", dataset="mnist")
    cfg = TrainConfig(preset="crossbar-digits")
    assert (cfg.dataset, cfg.algorithm, cfg.resolved_engine) == ("digits", "pep", "generic")


def _crossbar_cfg(**kw):
    return TrainConfig(preset="crossbar-digits", epochs=1, train_size=200, test_size=50, dtype="float64", **kw)


def test_train_crossbar_energy_columns_and_resume(tmp_path):
    cfg = _crossbar_cfg(energy=True, device_model="reram-sb")
    full = train(cfg, tmp_path / "f", progress=False)
    row = full[-1]
    assert row["energy_free_J"] > 0 and row["energy_nudged_J"] > 0 and row["energy_program_J"] > 0
    assert (tmp_path / "f" / "energy.png").exists()
    part = train(cfg, tmp_path / "i", progress=False, _interrupt_after=7)  # mid-epoch: sums in the checkpoint
    assert part.interrupted
    assert load_checkpoint(tmp_path / "i" / "checkpoint.npz")["energy_sums"] is not None
    train(cfg, tmp_path / "i", resume=True, progress=False)

    def measured(folder):
        return [[c for k, c in r.items() if "seconds" not in k] for r in _rows(folder)]

    assert measured(tmp_path / "i") == measured(tmp_path / "f")
    ideal = train(_crossbar_cfg(energy=True), tmp_path / "ideal", progress=False)
    assert "energy_program_J" not in ideal[-1] and _rows(tmp_path / "ideal")[0]["energy_program_J"] == ""
    assert "nan" not in (tmp_path / "ideal" / "metrics.csv").read_text().lower()


def test_crossbar_preset_with_ideal_devices_equals_the_ideal_network(tmp_path, monkeypatch):
    """Bit for bit with the ideal device (the crossbar changes the energy model and the device
    wrapping, not the arithmetic); within 1e-9 with continuous unbounded differential pairs."""
    plain = replace(preset_mod.PRESETS["crossbar-digits"], name="dhn-digits-test", crossbar=())
    monkeypatch.setitem(preset_mod.PRESETS, plain.name, plain)
    train(_crossbar_cfg(), tmp_path / "x", progress=False)
    train(TrainConfig(preset=plain.name, epochs=1, train_size=200, test_size=50, dtype="float64"), tmp_path / "p",
          progress=False)
    px = load_checkpoint(tmp_path / "x" / "checkpoint.npz")["params"]
    pp = load_checkpoint(tmp_path / "p" / "checkpoint.npz")["params"]
    for a, b in zip(px, pp):
        np.testing.assert_array_equal(a, b)
    dev = tmp_path / "pair.json"
    dev.write_text(json.dumps(device_to_dict(Device(name="pair", bounds=Bounds(0.0, 1e6), pair=DifferentialPair()))))
    train(_crossbar_cfg(device_model=str(dev)), tmp_path / "d", progress=False)
    pd = load_checkpoint(tmp_path / "d" / "checkpoint.npz")["params"]
    for a, b in zip(pd, pp):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


def test_layered_meter_refuses_presets_without_a_physical_picture():
    with pytest.raises(PhysgradError, match="energy is defined"):
        LayeredEnergyMeter.for_preset(preset_mod.PRESETS["dhn-1h"], None, None)


def test_train_drn_programming_energy_on_a_device_updated_in_place(data_dir, tmp_path):
    """A DRN on reram-sb: the device updates in place (layered2's route) except under --energy, whose
    programming column needs the update's before/after (the routes are bit for bit the same arithmetic,
    so the errors agree). The column was empty when --energy took the in-place route."""
    from physgrad.layered.train import TrainConfig
    base = dict(preset="drn-xs", data_dir=str(data_dir), epochs=1, train_size=24, test_size=8, threads=1,
                device_model="reram-sb", engine="generic")  # --energy runs on the generic engine
    with_energy = train(TrainConfig(**base, energy=True), tmp_path / "e", progress=False)
    plain = train(TrainConfig(**base), tmp_path / "p", progress=False)
    assert with_energy[-1]["energy_program_J"] > 0
    assert with_energy[-1]["test_error"] == plain[-1]["test_error"]
    assert with_energy[-1]["train_error"] == plain[-1]["train_error"]
