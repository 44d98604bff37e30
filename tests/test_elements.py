"""Circuit graph: element validation, lookups, array views."""
import math

import numpy as np
import pytest

from physgrad.circuit.elements import (Circuit, CurrentSource, DiodeModel, IdealDiode, Resistor, ShockleyDiode,
                              VoltageSource)
from physgrad.types import Nudge, PhysgradError


@pytest.mark.parametrize("make,pattern", [
    (lambda: Resistor("r1", "a", "0", -1e-3), "negative conductance"),
    (lambda: Resistor("r1", "a", "0", math.nan), "must be finite"),
    (lambda: Resistor("r1", "a", "0", "x"), "must be a number"),
    (lambda: Resistor("x1", "a", "0", 1.0), "must start with 'R'"),
    (lambda: Resistor("r1", "a", "A", 1.0), "connects node 'a' to itself"),
    (lambda: Resistor("r1", "a b", "0", 1.0), "invalid node name"),
    (lambda: IdealDiode("d1", "a", "0", -0.1), "negative threshold"),
    (lambda: VoltageSource("v1", "a", "0", math.inf), "must be finite"),
    (lambda: CurrentSource("i1", "0", "gnd", 1.0), "connects node '0' to itself"),
    (lambda: DiodeModel("m", IS=0.0), "IS of diode model m must be > 0"),
    (lambda: DiodeModel("m", N=-1.0), "N of diode model m must be > 0"),
    (lambda: ShockleyDiode("d1", "a", "0", "m"), "model must be a DiodeModel"),
    (lambda: Circuit((Resistor("r1", "a", "0", 1.0), Resistor("R1", "a", "0", 1.0))), "duplicate element name 'r1'"),
    (lambda: Circuit((Resistor("r1", "a", "0", 1.0),), targets={"b": 1.0}), "target node 'b' is not a node"),
    (lambda: Circuit((Resistor("r1", "a", "0", 1.0),), targets={"a": math.nan}), "must be finite"),
    (lambda: Circuit((Resistor("r1", "a", "0", 1.0),), trainable=("v1",)), "'v1' is not an element"),
    (lambda: Circuit((Resistor("r1", "a", "0", 1.0), VoltageSource("v1", "a", "0", 1)), trainable=("v1",)),
     "'v1' is not a resistor"),
    (lambda: Circuit((Resistor("r1", "a", "0", 1.0),), title="two\nlines"), "single line"),
    (lambda: Circuit(("r1 a 0 1",)), "unknown element type"),
    (lambda: Nudge(1.0), "needs a target"),
    (lambda: Nudge(math.nan, np.zeros(1)), "must be finite"),
    (lambda: Nudge(1.0, np.zeros(1), clamp=np.zeros(1)), "not both"),
    (lambda: Nudge(0.0, clamp=np.array([np.nan])), "NaN"),
])
def test_bad_elements(make, pattern):
    with pytest.raises(PhysgradError, match=pattern):
        make()


def test_names_are_case_insensitive_and_gnd_is_ground():
    c = Circuit((VoltageSource("V1", "IN", "GND", 1.0), Resistor("R1", "In", "0", 2.0)))
    assert c.nodes == ("in",)
    assert c.element("r1").conductance == 2.0
    with pytest.raises(PhysgradError, match="unknown element 'r9'"):
        c.element("r9")
    with pytest.raises(PhysgradError, match="unknown node 'x'"):
        c.index_of_node("x")


def test_functional_updates_and_arrays():
    c = Circuit((VoltageSource("v1", "a", "0", 1.0), Resistor("r1", "a", "b", 2.0), Resistor("r2", "b", "0", 3.0),
                 CurrentSource("i1", "0", "b", 0.5)))
    c2 = c.with_conductances({"R2": 4.0}).with_sources({"i1": 0.25})
    assert c2.element("r2").conductance == 4.0 and c2.element("i1").value == 0.25
    assert c.element("r2").conductance == 3.0  # the original is unchanged
    arr = c.arrays
    np.testing.assert_array_equal(arr.g, [2.0, 3.0])
    L = arr.laplacian().toarray()
    np.testing.assert_allclose(L, [[2.0, -2.0], [-2.0, 5.0]])
    np.testing.assert_allclose(arr.injection(), [0.0, 0.5])
    with pytest.raises(PhysgradError, match="not a resistor"):
        c.with_conductances({"v1": 1.0})
    with pytest.raises(PhysgradError, match="not an independent source"):
        c.with_sources({"r1": 1.0})
    assert c.trainable_names == ("r1", "r2")
