"""Option fuzz, small in-process form (the large form is ``benchmarks/fuzz_options.py``): every option of
the quick commands given hostile values exits 0, 1 or 2 without a traceback, a refusal names the option
or the value, and no NaN reaches stdout; and the cases the large form found, each now refused or
reported as not solved with a message that says why."""
import importlib.util
import random
from pathlib import Path

import pytest

from physgrad.cli import main
from physgrad.minimizers.co_content import join_messages
from verification.circuits import NMOS_EDGES_CSV, NMOS_EDGES_DECK

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "physgrad" / "examples"
IRIS = [str(EXAMPLES / "iris" / "iris16.cir"), "--data", str(EXAMPLES / "iris" / "iris.csv"), "--inputs",
        "vsl,vsw,vpl,vpw", "--outputs", "o1,o2,o3", "--label-column", "species", "--epochs", "1", "--batch-size", "50",
        "--no-progress"]


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_options", ROOT / "benchmarks" / "fuzz_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(argv, capsys) -> tuple:
    """``(exit code, stdout, stderr)`` of ``physgrad argv`` in this process (argparse's exit included)."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("baseline", ["solve", "grad", "netlist"])
def test_every_option_of_the_quick_commands(fuzz, baseline, tmp_path, capsys, monkeypatch):
    """All options of ``solve``, ``grad`` and ``netlist layered``, eight hostile values each (seeded)."""
    monkeypatch.chdir(tmp_path)
    files = fuzz.fixtures(tmp_path)
    cases = fuzz.cases(baseline, fuzz.BASELINES[baseline], 8, random.Random(7))
    assert len(cases) > 10
    ran = []
    bad = []
    for k, (_, flag, value, argv) in enumerate(cases):
        args = [a.format(out=tmp_path / f"o{k}", **files) for a in argv]
        rc, out, err = run(args, capsys)
        ran.append(rc)
        named = fuzz.names_option(err, flag) or fuzz.names_value(err, value)
        if flag in fuzz.PATH_OPTIONS and value:
            out = out.replace(value, "")  # the file's own name printed back is not a number
        if rc not in (0, 1, 2) or (rc == 2 and not named) or fuzz.NONFINITE.search(out.encode()):
            bad.append((flag, value, rc, err.strip()[-200:]))
    assert not bad, bad[:5]
    assert len(ran) == len(cases) and ran.count(2) > len(cases) / 2  # every case ran; most are refused


def test_train_options_that_were_accepted_or_crashed(tmp_path, capsys):
    base = ["train", "--preset", "crossbar-digits", "--epochs", "1", "--train-size", "60", "--no-progress"]
    for extra, word in ((["--input-gain", "nan"], "--input-gain"), (["--lr-factor", "inf"], "--lr-factor"),
                        (["--beta", "1e400"], "--beta"), (["--input-gain", "2"], "input_gain is a DRN option"),
                        (["--eta", "0.2"], "--eta is the amplitude of coupled learning"),
                        (["--beta", "1e308"], "beta = 1e+308 is not a positive finite float32"),
                        (["--algorithm", "cep", "--zero-phase", "relaxed"], "algorithm 'cep' has none")):
        rc, _, err = run(base + ["--out", str(tmp_path / "o"), *extra], capsys)
        assert rc == 2 and word in err, (extra, err)
        assert not (tmp_path / "o").exists()  # refused before the folder is claimed
    # a learning rate that overflows the parameters: not solved (1), saying so, not bad input
    rc, _, err = run(base + ["--out", str(tmp_path / "div"), "--lr-factor", "1e308"], capsys)
    assert rc == 1 and "training diverged in epoch 1" in err and "no checkpoint had been saved" in err


def test_fit_options_that_were_ignored(tmp_path, capsys):
    (tmp_path / "nmos.cir").write_text(NMOS_EDGES_DECK)
    (tmp_path / "nmos.csv").write_text(NMOS_EDGES_CSV)
    nmos = ["fit", str(tmp_path / "nmos.cir"), "--data", str(tmp_path / "nmos.csv"), "--inputs", "vin", "--outputs",
            "out", "--method", "exact", "--trainable", "vg*", "--epochs", "1", "--no-progress"]
    for argv, word in ((["fit", *IRIS, "--eta", "0.2"], "--eta is the amplitude of coupled learning"),
                       (["fit", *IRIS, "--method", "exact", "--beta", "1e-4"], "--beta is the nudge of EP"),
                       (["fit", *IRIS, "--source-lr", "0.1"], "--source-lr is the learning rate of trained sources"),
                       (nmos + ["--lr", "0.1"], "--lr: no resistor is trained"),
                       (nmos + ["--g-min", "1e-6", "--g-max", "1"], "--g-min, --g-max: no resistor is trained"),
                       (["fit", *IRIS, "--margin", "1e308"], "--margin 1e+308 V is more than 1e+06 times the span")):
        rc, _, err = run(argv + ["--out", str(tmp_path / "o")], capsys)
        assert rc == 2 and word in err, (argv[-2:], err)
        assert not (tmp_path / "o").exists()


def test_fit_that_diverges_says_so(tmp_path, capsys):
    """A learning rate that sends the conductances to 1e308: exit 1 naming the parameters' span and the
    likely cause; the batch's message names three samples and counts the rest."""
    with pytest.warns(RuntimeWarning):  # the overflow itself, inside the solver's assembly
        rc, _, err = run(["fit", *IRIS, "--lr", "1e308", "--out", str(tmp_path / "o")], capsys)
    assert rc == 1 and "KKT certificate failed" in err and "... and 47 more" in err
    assert "after 1 optimizer steps the trained parameters span" in err and "lower --lr" in err
    assert len(err) < 2000


def test_predict_refuses_a_label_column_the_data_lacks(tmp_path, capsys):
    assert run(["fit", *IRIS, "--out", str(tmp_path / "run")], capsys)[0] == 0
    rc, _, err = run(["predict", str(tmp_path / "run"), "--data", str(EXAMPLES / "iris" / "iris.csv"),
                      "--label-column", "kind"], capsys)
    assert rc == 2 and "no column 'kind' (--label-column)" in err and "iris.csv:1" in err
    rc, out, _ = run(["predict", str(tmp_path / "run"), "--data", str(EXAMPLES / "iris" / "iris.csv"),
                      "--label-column", "species"], capsys)
    assert rc == 0 and "accuracy" in out


def test_grad_refuses_options_of_other_methods(tmp_path, capsys):
    deck = str(EXAMPLES / "rectifier.cir")
    for extra, word in ((["--beta", "1e-3"], "--beta is an option of --method pep"),
                        (["--eta", "0.5"], "--eta is an option of --method pcpl"),
                        (["--steps", "5"], "--steps is an option of --method tbp"),
                        (["--method", "cep", "--points", "5"], "--points is an option of --method fp")):
        rc, _, err = run(["grad", deck, *extra], capsys)
        assert rc == 2 and word in err, (extra, err)
    assert run(["grad", deck, "--method", "tbp", "--steps", "5", "--json"], capsys)[0] == 0


def test_join_messages_counts_the_rest():
    assert join_messages([]) == ""
    assert join_messages(["a", "b"]) == "a; b"
    assert join_messages([f"s{k}" for k in range(10)]) == "s0; s1; s2; ... and 7 more"
