"""Sweep specifications: a TOML file crossing a command's options over a grid and a list of seeds.

A specification names the command (``task``), its fixed options (``[base]``), the options to cross
(``[grid]``, lists) and the seeds (``seeds``). Options are spelled as the command's flags without the
dashes (``data-dir`` or ``data_dir``, ``train-size``, ...); ``out``, ``seed`` and ``resume`` belong to
the sweep, which sets them for every run::

    task = "train"
    seeds = [0, 1, 2]
    [base]
    preset = "drn-xs"
    epochs = 10
    [grid]
    algorithm = ["cep", "tbp"]

Each run is identified by a hash of its canonical parameters (:func:`task_id`), so the same run has
the same id in every sweep, whatever the order of the keys or of the grid.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from physgrad.types import PhysgradError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RESERVED = ("out", "seed", "resume")
TOP_LEVEL = ("task", "seeds", "base", "grid")


class SpecError(PhysgradError):
    """A sweep specification that cannot be used; the message names the file and the key."""


def option_name(flag: str) -> str:
    """A flag without its dashes as a Python name: ``"train-size"`` -> ``"train_size"``."""
    return str(flag).strip().lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed and validated sweep.

    Attributes
    ----------
    task : str
        The command each run executes (a key of :data:`physgrad.sweep.tasks.TASKS`).
    seeds : tuple of int
    base : mapping
        Fixed options (Python names, see :func:`option_name`).
    grid : mapping of str to tuple
        Options to cross; every combination runs with every seed.
    source : str
        Where the spec came from (for messages).
    """

    task: str
    seeds: tuple
    base: Mapping = field(default_factory=dict)
    grid: Mapping = field(default_factory=dict)
    source: str = "<spec>"

    def __post_init__(self):
        where = self.source
        if not isinstance(self.seeds, (tuple, list)) or not self.seeds:
            raise SpecError(f"{where}: seeds must be a non-empty list of integers")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise SpecError(f"{where}: seeds must be integers >= 0, got {s!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"{where}: seeds repeat: {list(self.seeds)}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        base = {option_name(k): v for k, v in dict(self.base).items()}
        grid = {option_name(k): v for k, v in dict(self.grid).items()}
        for section, values in (("base", base), ("grid", grid)):
            for k in values:
                if k in RESERVED:
                    raise SpecError(f"{where}: [{section}] {k}: set by the sweep for every run; remove it")
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise SpecError(f"{where}: [grid] {k} must be a non-empty list, got {v!r}")
            if len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
                raise SpecError(f"{where}: [grid] {k} repeats a value: {v!r}")
        both = set(base) & set(grid)
        if both:
            raise SpecError(f"{where}: {sorted(both)} in both [base] and [grid]")
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "grid", {k: tuple(v) for k, v in grid.items()})

    def runs(self) -> list:
        """Every run's parameters (base + one grid point + ``seed``), grid-major, seeds innermost."""
        keys = sorted(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            for seed in self.seeds:
                out.append({**self.base, **dict(zip(keys, values)), "seed": seed})
        return out


def task_id(task: str, params: Mapping) -> str:
    """12 hex digits of the SHA-256 of the canonical JSON of ``task`` and ``params`` (sorted keys)."""
    text = json.dumps({"task": task, "params": dict(params)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def configuration_key(params: Mapping) -> str:
    """The parameters without the seed, canonical JSON: runs that differ only by seed share it."""
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True)


def load_spec(path) -> SweepSpec:
    """Read a sweep TOML file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - set(TOP_LEVEL)
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {', '.join(TOP_LEVEL)}")
    if "task" not in data:
        raise SpecError(f"{path}: missing `task = \"...\"` (the command each run executes)")
    for section in ("base", "grid"):
        if not isinstance(data.get(section, {}), dict):
            raise SpecError(f"{path}: [{section}] must be a table")
    return SweepSpec(task=str(data["task"]), seeds=data.get("seeds", [0]), base=data.get("base", {}),
                     grid=data.get("grid", {}), source=str(path))
