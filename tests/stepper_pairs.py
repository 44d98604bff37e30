"""Shared by the kernel tests: run two layered steppers side by side on the same batches."""
import numpy as np


def step_side_by_side(a, b, x, y, rtol=1e-11, atol=1e-12, xb=None, exact=False):
    """Train steppers ``a`` (host numpy) and ``b`` (any backend) on the same batches of ``x``, ``y``
    (lr scale 0.9; ``b`` is handed ``xb`` instead of ``x`` where given: the same pixels in another form),
    asserting equal predictions and warm states equal to ``rtol``/``atol`` (``exact``: byte for byte)
    after every batch. Returns the last warm states ``(wa, wb)``."""
    xb = x if xb is None else xb
    order, B = np.arange(len(x)), a.preset.batch_size
    a.start_epoch(x, order, 0)
    b.start_epoch(xb, order, 0)
    wa = wb = None
    for bi in range(-(-len(x) // B)):
        idx = order[bi * B:(bi + 1) * B]
        nxt = order[(bi + 1) * B:(bi + 2) * B] if (bi + 1) * B < len(x) else None
        wa, pa = a.step(x, idx, y[idx], nxt, wa, 0.9)
        wb, pb = b.step(xb, idx, y[idx], nxt, wb, 0.9)
        np.testing.assert_array_equal(pa, pb)
        for u, v in zip(wa, b.to_host(wb)):
            if exact:
                assert u.tobytes() == v.tobytes()
            else:
                np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)
    return wa, wb
