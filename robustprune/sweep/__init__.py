"""Sweeps: recipes x target sparsities x seeds. Each cell trains (or prunes) a model and scores it on the same
fixed examples; its files live under a key derived from its resolved configuration (see `plan`)."""

from robustprune.config import SweepSpec, read_sweep_toml
from robustprune.sweep.cell import load_complete_cell, run_cell
from robustprune.sweep.executors import EXECUTORS, Executor
from robustprune.sweep.plan import KEY_VERSION, Cell, cell_key, plan_cells
from robustprune.sweep.run import run_sweep, sweep_document

__all__ = [
    "EXECUTORS",
    "KEY_VERSION",
    "Cell",
    "Executor",
    "SweepSpec",
    "cell_key",
    "load_complete_cell",
    "plan_cells",
    "read_sweep_toml",
    "run_cell",
    "run_sweep",
    "sweep_document",
]
