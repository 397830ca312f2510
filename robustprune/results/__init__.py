"""Results: typed documents written and read back (schema-validated both ways), cell records, and the store that
reads sweeps and single scores back for reports and `check`."""

from robustprune.results.cells import CellConfig, CellRecord
from robustprune.results.io import check_document, load_document, load_result, save_result
from robustprune.results.store import StoredCell, StoredSweep, load_cells, load_sweep

__all__ = [
    "CellConfig",
    "CellRecord",
    "StoredCell",
    "StoredSweep",
    "check_document",
    "load_cells",
    "load_document",
    "load_result",
    "load_sweep",
    "save_result",
]
