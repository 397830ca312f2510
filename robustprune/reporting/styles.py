"""Colour and marker per recipe, fixed by NAME (never by plotting order), so a recipe looks the same in every
figure of every report (research/ecosystem.md section 3)."""

from __future__ import annotations

import colorsys
import hashlib

# Fixed per recipe NAME (never by plotting order), so a recipe looks the same in every figure and every report.
# Families share a hue (magnitude: blues, adversarial training: reds, DIO: purples); markers tell them apart.
RECIPE_STYLES: dict[str, tuple[str, str]] = {
    "dense": ("#000000", "o"),
    "magnitude": ("#1f77b4", "s"),
    "magnitude_iterative": ("#6baed6", "D"),
    "magnitude_agp": ("#17becf", "v"),
    "magnitude_one_cycle": ("#393b79", "^"),
    "scratch": ("#7f7f7f", "P"),
    "pgd_at": ("#d62728", "^"),
    "pgd_at_agp": ("#ff9896", "v"),
    "trades": ("#ff7f0e", "X"),
    "fgsm_rs": ("#8c564b", "<"),
    "deadwooding": ("#2ca02c", ">"),
    "dio": ("#9467bd", "h"),
    "dio_at": ("#c5b0d5", "H"),
}
_HASH_MARKERS = ("o", "s", "D", "^", "v", "<", ">", "P", "X", "h", "*", "p")


def recipe_style(recipe: str) -> tuple[str, str]:
    """(colour, marker) of a recipe: the fixed table, else derived from a stable hash of the name."""
    if recipe in RECIPE_STYLES:
        return RECIPE_STYLES[recipe]
    digest = hashlib.sha256(recipe.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.70, 0.80)
    color = f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"
    return color, _HASH_MARKERS[digest[2] % len(_HASH_MARKERS)]
