"""Round 6 (reports/benchmarks/devices.md): rint(fl(d / dw0)) against the reciprocal with Markstein's fma
correction, bit for bit near every rounding boundary, and the cost of both row loops. Standalone experiment (not used by
the library). Usage: python benchmarks/devices_markstein.py"""
import numpy as np, numba, time
from numba import njit
from numba.core import types, cgutils
from numba.extending import intrinsic
from llvmlite import ir

@intrinsic
def fma(typingctx, a, b, c):
    sig = types.float64(types.float64, types.float64, types.float64)
    def codegen(context, builder, signature, args):
        d = ir.DoubleType(); f = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(f, args)
    return sig, codegen

@njit(cache=False)
def div_row(d, dw0, out):
    for c in range(d.shape[0]):
        out[c] = np.rint(float(d[c]) / dw0)

@njit(cache=False)
def mul_row(d, dw0, inv, out):
    for c in range(d.shape[0]):
        x = float(d[c])
        q = x * inv
        r = fma(-q, dw0, x)
        out[c] = np.rint(fma(r, inv, q))

dw0 = 1.0/127; inv = 1.0/dw0
rng = np.random.default_rng(0)
# near half-integers: d = (n + 0.5) * dw0 perturbed by a few ulps, float32 and float64
for dt in (np.float32, np.float64):
    n = rng.integers(-300, 300, 2_000_000).astype(float) + 0.5
    base = (n * dw0).astype(dt)
    ds = [base]
    for k in range(1, 6):
        ds.append(np.nextafter(ds[-1], dt(np.inf)).astype(dt))
    b = base
    for k in range(1, 6):
        b = np.nextafter(b, dt(-np.inf)).astype(dt); ds.append(b)
    ds.append(rng.normal(0, 0.05, 4_000_000).astype(dt))
    d = np.concatenate(ds)
    o1 = np.empty(d.size); o2 = np.empty(d.size)
    div_row(d, dw0, o1); mul_row(d, dw0, inv, o2)
    print(dt.__name__, d.size, "mismatches", np.count_nonzero(o1 != o2))
@njit(inline="always")
def row_div(gr, vr, dw0, cap, lo, hi, st_up, st_dn):
    for c in range(gr.shape[0]):
        gc = gr[c]
        nf = np.rint(min(max(float(vr[c] - gc) / dw0, -cap), cap))
        st = st_up if nf > 0 else st_dn
        vr[c] = min(max(float(gc) + st * abs(nf), lo), hi)
        gr[c] = vr[c]

@njit(inline="always")
def row_fma(gr, vr, dw0, inv, cap, lo, hi, st_up, st_dn):
    for c in range(gr.shape[0]):
        gc = gr[c]
        x = float(vr[c] - gc)
        q = x * inv
        q = fma(fma(-q, dw0, x), inv, q)
        nf = np.rint(min(max(q, -cap), cap))
        st = st_up if nf > 0 else st_dn
        vr[c] = min(max(float(gc) + st * abs(nf), lo), hi)
        gr[c] = vr[c]

@njit
def run(G, V, which, reps):
    dw0 = 1.0 / 127; inv = 1.0 / dw0; cap = 2.0 ** 53
    for _ in range(reps):
        for r in range(G.shape[0]):
            g = G[r].copy(); v = V[r].copy()
            if which == 0:
                row_div(g, v, dw0, cap, 0.0, 2.0, dw0, -dw0)
            else:
                row_fma(g, v, dw0, inv, cap, 0.0, 2.0, dw0, -dw0)

rng = np.random.default_rng(0)
G = rng.uniform(0, 2, (274, 200)).astype(np.float32)
V = (G + rng.normal(0, 0.01, G.shape)).astype(np.float32)
for w in (0, 1):
    run(G, V, w, 1)
for k in range(3):
    for w in (0, 1):
        t = time.thread_time_ns(); run(G, V, w, 200); dt = (time.thread_time_ns() - t) / 200 / 1e3
        print(["div", "fma"][w], f"{dt:.1f} us per 274 rows ({dt*1e3/G.size:.2f} ns/device)")
from numba import float32, float64, void
sig = (float32[::1], float32[::1], float64, float64, float64, float64, float64, float64, float64)
@njit
def f_fma(g, v, dw0, inv, cap, lo, hi, a, b):
    row_fma(g, v, dw0, inv, cap, lo, hi, a, b)
@njit
def f_div(g, v, dw0, inv, cap, lo, hi, a, b):
    row_div(g, v, dw0, cap, lo, hi, a, b)
import re
for f in (f_div, f_fma):
    f.compile(sig)
    asm = f.inspect_asm(f.signatures[0])
    print(f.__name__, {k: len(re.findall(k, asm)) for k in ("vdivpd", "vdivsd", "vfmadd\\w+pd", "vfmadd\\w+sd", "zmm", "ymm", "vrndscalepd", "vrndscalesd", "vroundsd", "vroundpd")})
