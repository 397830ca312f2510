"""Executors run a stage of cells and hand each finished record back; a registry, so a new executor is one class.

Each worker sets its torch thread count from the cell's configuration, so every executor computes the same
numbers for the same seeds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from robustprune.devices import is_cuda_spec
from robustprune.errors import UsageError
from robustprune.registry import Registry
from robustprune.results.cells import CellRecord
from robustprune.sweep.cell import pin_worker, run_cell
from robustprune.sweep.plan import Cell

OnDone = Callable[[CellRecord], None]


class Executor(ABC):
    name: ClassVar[str]

    def check(self) -> None:
        """Raise UsageError when this executor cannot run here (a missing optional dependency)."""

    @abstractmethod
    def run(self, cells: Sequence[Cell], root: str, *, workers: int, address: str | None, on_done: OnDone) -> None:
        """Compute every cell (in any order) and call `on_done` with each record."""


EXECUTORS: Registry[Executor] = Registry("executor")


@EXECUTORS.register_instance("inprocess")
class InProcess(Executor):
    def run(self, cells: Sequence[Cell], root: str, *, workers: int, address: str | None, on_done: OnDone) -> None:
        for cell in cells:
            on_done(run_cell(cell, root))


@EXECUTORS.register_instance("process")
class ProcessPool(Executor):
    """A spawn-context process pool of `workers` processes (spawn: no forked torch state); worker i runs its CUDA
    cells on cuda:(i % device_count) (sweep.cell.pin_worker)."""

    def run(self, cells: Sequence[Cell], root: str, *, workers: int, address: str | None, on_done: OnDone) -> None:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        context = get_context("spawn")
        indices = context.Queue()
        for i in range(workers):
            indices.put(i)
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=pin_worker, initargs=(indices,)
        ) as pool:
            for record in pool.map(run_cell, cells, [root] * len(cells)):
                on_done(record)


@EXECUTORS.register_instance("ray")
class Ray(Executor):
    """A local Ray instance with `workers` CPUs, or the cluster at `address` (the sweep directory must be on a
    filesystem every node shares)."""

    def check(self) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'robustprune[ray]'") from None

    def run(self, cells: Sequence[Cell], root: str, *, workers: int, address: str | None, on_done: OnDone) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(
                address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False
            )
        # a CUDA cell asks Ray for one GPU, so Ray places it on a node that has one and sets CUDA_VISIBLE_DEVICES
        gpus = 1 if any(is_cuda_spec(cell.device) for cell in cells) else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus)(run_cell)
        for record in ray.get([remote.remote(cell, root) for cell in cells]):
            on_done(record)
