"""Sweeps: grids of runs over seeds and settings, on a Dask cluster or a local pool, with tables over seeds.

``physgrad sweep SPEC --out DIR`` (:mod:`physgrad.cli.sweep`); the library: :func:`load_spec`,
:func:`run_sweep`, :func:`write_summary`.
"""
from physgrad.sweep.runner import read_results, run_sweep
from physgrad.sweep.spec import SpecError, SweepSpec, load_spec, task_id
from physgrad.sweep.summary import write_summary

__all__ = ["SpecError", "SweepSpec", "load_spec", "read_results", "run_sweep", "task_id", "write_summary"]
