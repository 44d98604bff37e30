"""Run the catalogue x checks and collect a tidy DataFrame."""
from __future__ import annotations

import time
from typing import Callable, Optional

import pandas as pd

from verification.cases import catalogue
from verification.checks import VerifyConfig, run_case


def run_suite(quick: bool = True, cfg: Optional[VerifyConfig] = None, cases=None,
              progress: Optional[Callable[[str, float], None]] = None) -> pd.DataFrame:
    """Every check on every case; one row per case x check x method x parameter.

    A case whose checks raise is recorded as one failed row (``check="error"``), never dropped.
    """
    cfg = cfg or VerifyConfig()
    rows = []
    for case in (cases if cases is not None else catalogue(quick)):
        t0 = time.perf_counter()
        try:
            rows += run_case(case, cfg)
        except Exception as err:  # a crash is a failed check, reported with its message
            rows.append(dict(case=case.name, family="error", check="error", method="", param_name="",
                             param=float("nan"), value=float("nan"), reference=float("nan"), error=float("nan"),
                             tol=float("nan"), status="fail", detail=f"{type(err).__name__}: {err}"[:300]))
        if progress:
            progress(case.name, time.perf_counter() - t0)
    return pd.DataFrame(rows)
