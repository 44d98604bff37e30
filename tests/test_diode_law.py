"""The Shockley law of physgrad.circuit.diode is ngspice's (issue 8, finding 3), its co-content is
convex, and SPICE's junction limiting behaves as DEVpnjlim.

Tolerances: the law against ngspice-39's printed currents to 1e-9 relative (``print`` with
``numdgt=12``, ``reltol=1e-12`` so that ngspice's own iteration is far below that); continuity and
derivatives to 1e-12 relative (central differences with step 1e-7 V: truncation ~1e-14)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from physgrad.circuit.diode import (REVERSE_SWITCH, pnjlim, shockley_co_content, shockley_current, shockley_slope,
                                    shockley_vcrit)
from physgrad.circuit.elements import NGSPICE_GMIN, NGSPICE_VT

IS, N = 1e-3, 1.3
NVT = N * NGSPICE_VT


def test_reverse_branch_formula():
    v = np.array([-0.2, -1.0, -10.0])
    a3 = (3 * NVT / np.e) ** 3
    expect = -IS * (1 + a3 / v**3) + NGSPICE_GMIN * v
    np.testing.assert_allclose(shockley_current(v, IS, N, NGSPICE_VT, NGSPICE_GMIN), expect, rtol=1e-14)
    fwd = np.array([-0.01, 0.0, 0.3])
    np.testing.assert_allclose(shockley_current(fwd, IS, N, NGSPICE_VT, NGSPICE_GMIN),
                               IS * np.expm1(fwd / NVT) + NGSPICE_GMIN * fwd, rtol=1e-14)


def test_continuous_and_differentiable_at_the_switch():
    v0 = -REVERSE_SWITCH * NVT
    left, right = v0 * (1 + 1e-12), v0 * (1 - 1e-12)
    for f in (shockley_current, shockley_slope, shockley_co_content):
        a, b = f(left, IS, N, NGSPICE_VT, NGSPICE_GMIN), f(right, IS, N, NGSPICE_VT, NGSPICE_GMIN)
        assert a == pytest.approx(b, rel=1e-9)


@pytest.mark.parametrize("v", [-5.0, -0.5, -0.11, -3 * NVT, -0.05, 0.0, 0.2, 0.6])
def test_derivatives(v):
    h = 1e-7
    i = shockley_current(v, IS, N, NGSPICE_VT, NGSPICE_GMIN)
    dj = (shockley_co_content(v + h, IS, N, NGSPICE_VT, NGSPICE_GMIN)
          - shockley_co_content(v - h, IS, N, NGSPICE_VT, NGSPICE_GMIN)) / (2 * h)
    assert dj == pytest.approx(i, rel=1e-7, abs=1e-14)  # abs: round-off of J(v +- h) near 0
    di = (shockley_current(v + h, IS, N, NGSPICE_VT, NGSPICE_GMIN)
          - shockley_current(v - h, IS, N, NGSPICE_VT, NGSPICE_GMIN)) / (2 * h)
    assert di == pytest.approx(shockley_slope(v, IS, N, NGSPICE_VT, NGSPICE_GMIN), rel=1e-6)
    g = autograd.grad(lambda x: anp.sum(shockley_co_content(x, IS, N, NGSPICE_VT, NGSPICE_GMIN)))(np.array([v]))
    assert g[0] == pytest.approx(i, rel=1e-12, abs=1e-20)


def test_co_content_convex_and_current_increasing():
    v = np.linspace(-20, 0.5, 200001)
    i = shockley_current(v, IS, N, NGSPICE_VT, 0.0)
    assert np.all(np.diff(i) > 0)
    assert np.all(shockley_slope(v, IS, N, NGSPICE_VT, 0.0) > 0)


def _ngspice_current(v: float, is_: float, n: float) -> float:
    text = (f"law\nv1 a 0 {v!r}\nd1 a 0 dm\n.model dm D(IS={is_!r} N={n!r})\n"
            ".options reltol=1e-12 abstol=1e-22 vntol=1e-15\n.control\nset numdgt=12\nop\nprint i(v1)\n.endc\n.end\n")
    out = subprocess.run(["ngspice", "-b", "/dev/stdin"], input=text, capture_output=True, text=True, timeout=60)
    m = re.search(r"i\(v1\)\s*=\s*(\S+)", out.stdout)
    assert m, out.stdout + out.stderr
    return -float(m.group(1))


@pytest.mark.ngspice
@pytest.mark.parametrize("v", [-0.04, -0.0776, -0.1, -0.2, -0.5, -3.0])
def test_law_matches_the_ngspice_binary(v):
    if shutil.which("ngspice") is None:
        if os.environ.get("CI"):
            pytest.fail("ngspice is not installed in CI")
        pytest.skip("ngspice not installed")
    ng = _ngspice_current(v, IS, N)
    assert shockley_current(v, IS, N, NGSPICE_VT, NGSPICE_GMIN) == pytest.approx(ng, rel=1e-9)


def test_pnjlim_matches_devpnjlim():
    nvt, vcrit = NVT, float(shockley_vcrit(1e-14, N, NGSPICE_VT))
    # forward step above vcrit from a forward vold: logarithmic
    assert pnjlim(5.0, 0.6, nvt, vcrit) == pytest.approx(0.6 + nvt * np.log(1 + 4.4 / nvt))
    # from vold <= 0: nvt ln(vnew / nvt)
    assert pnjlim(5.0, -1.0, nvt, vcrit) == pytest.approx(nvt * np.log(5.0 / nvt))
    # small steps and steps below vcrit pass unchanged
    assert pnjlim(0.61, 0.6, nvt, vcrit) == 0.61
    assert pnjlim(0.3, -2.0, nvt, vcrit) == 0.3
    # reverse steps: cut at 2 vold - 1 (vold <= 0) or -vold - 1 (vold > 0)
    assert pnjlim(-17.0, 0.0, nvt, vcrit) == -1.0
    assert pnjlim(-17.0, -1.0, nvt, vcrit) == -3.0
    assert pnjlim(-17.0, 0.5, nvt, vcrit) == -1.5
    assert pnjlim(-0.5, 0.0, nvt, vcrit) == -0.5
