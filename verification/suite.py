"""Run the catalogue x checks and collect a tidy DataFrame."""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import pandas as pd

from verification.cases import catalogue
from verification.checks import VerifyConfig, run_case
from verification.dchn import dchn_cases
from verification.scale import ScaleCase, run_scale_case, scale_cases
from verification.report import environment, write_report


def run_suite(quick: bool = True, cfg: Optional[VerifyConfig] = None, cases=None,
              progress: Optional[Callable[[str, float], None]] = None, scale: bool = True) -> pd.DataFrame:
    """Every check on every case; one row per case x check x method x parameter.

    A case whose checks raise is recorded as one failed row (``check="error"``), never dropped.
    ``scale``: also the random circuits at scale (:mod:`verification.scale`).
    """
    cfg = cfg or VerifyConfig()
    rows = []
    if cases is None:
        cases = catalogue(quick) + dchn_cases(quick) + (scale_cases(quick) if scale else [])
    for case in cases:
        t0 = time.perf_counter()
        try:
            rows += run_scale_case(case, cfg) if isinstance(case, ScaleCase) else run_case(case, cfg)
        except Exception as err:  # a crash is a failed check, reported with its message
            rows.append(dict(case=case.name, family="error", check="error", method="", param_name="",
                             param=float("nan"), value=float("nan"), reference=float("nan"), error=float("nan"),
                             tol=float("nan"), status="fail", detail=f"{type(err).__name__}: {err}"[:300]))
        if progress:
            progress(case.name, time.perf_counter() - t0)
    return pd.DataFrame(rows)


def verify(quick: bool = True, out: Optional[str] = None, seed: int = 0, argv: Sequence[str] = (),
           progress: Optional[Callable[[str, float], None]] = None):
    """Run the suite and write its report folder.

    Parameters
    ----------
    quick : bool
        The small case set (seconds) instead of the full one.
    out : str, optional
        Report folder (default ``reports/verify-quick`` or ``reports/verify-full``).
    seed : int
        Seed of the finite-difference directions.
    argv : sequence of str
        The command line, recorded in ``environment.json``.

    Returns
    -------
    (DataFrame, dict, dict)
        The results, the environment record and the paths of the written files.
    """
    mode = "quick" if quick else "full"
    cfg = VerifyConfig(seed=seed)
    t0 = time.perf_counter()
    df = run_suite(quick=quick, cfg=cfg, progress=progress)
    env = environment(cfg, time.perf_counter() - t0, list(argv))
    paths = write_report(df, out or f"reports/verify-{mode}", env, title=f"physgrad gradient verification ({mode})")
    return df, env, paths
