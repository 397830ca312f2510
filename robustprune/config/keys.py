"""Keys derived from configurations: runs and cells are named by a hash of what they are."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_key(obj: Any, length: int = 16) -> str:
    """sha256 over canonical JSON (sorted keys, no whitespace), kept to `length` hex characters."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
