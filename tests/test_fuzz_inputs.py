"""Hostile-input fuzz, small seeded form (issue 18 item 7; the large form, through the command line
in subprocesses, is ``benchmarks/fuzz_inputs.py``).

Every hostile netlist (include and subcircuit bombs, deep nesting, ``.func``/``.param`` chains,
overflowing expressions, huge tokens, odd bytes, symbolic-link loops, devices, FIFOs and folders
as includes or as the netlist) and every hostile CSV ends in the outcome its case expects (solved
with the known voltages, or refused with a message naming the file), never a traceback or a hang
(20 s of CPU per case)."""
from __future__ import annotations

from pathlib import Path

import pytest

from physgrad.netlists.data import class_names, encode_labels, read_table
from verification import fuzz


def _check(case, out, folder):
    assert out.kind not in ("crash", "hang"), (case.name, out.kind, out.detail[-600:])
    assert out.kind in case.expect, (case.name, out.kind, out.detail[-300:])
    if out.kind == "refused":
        # the message names the file (the netlist, or the include where a limit was crossed) and its line
        assert case.path in out.detail or str(folder) in out.detail, (case.name, out.detail[:300])
    if out.kind == "ok" and case.check:
        for node, v in case.check.items():
            assert abs(out.voltages[node] - v) <= 1e-9, (case.name, node, out.voltages[node], v)


def test_hostile_netlists(tmp_path):
    cases = fuzz.hostile_decks(tmp_path, seed=0, scale=0.2)
    assert len(cases) > 50
    for case in cases:
        _check(case, fuzz.run_path(case.path, timeout_s=20), tmp_path)


def read_csv(path, label):
    """What ``physgrad fit`` reads of a CSV for :data:`verification.fuzz.FIT_NETLIST`."""
    table = read_table(path, {"v1": "input", **({} if label else {"out": "target"})}, label)
    if label:
        encode_labels(table, class_names(table.labels))


def test_hostile_csvs(tmp_path):
    cases = fuzz.hostile_csvs(tmp_path, seed=0, scale=0.5)
    assert len(cases) > 20
    for case in cases:
        _check(case, fuzz.run_call(lambda: read_csv(case.path, case.label), timeout_s=20), tmp_path)


@pytest.mark.parametrize("seed", [1, 2])
def test_generators_are_seeded(tmp_path, seed):
    def files(folder):
        return [(c.name, Path(c.path).read_bytes()) for c in fuzz.hostile_csvs(folder, seed, scale=0.1)
                if Path(c.path).is_file() and Path(c.path).parent == folder]

    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert len(a) > 15 and a == b
