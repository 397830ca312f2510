"""Reports of a score result: Markdown (default), self-contained HTML, a stdout summary, and matplotlib figures.

All three text forms are built from the same rows (`tables`), so they never disagree.
"""

from robustprune.reporting.html import render_html
from robustprune.reporting.markdown import render_markdown
from robustprune.reporting.text import summary_table

__all__ = ["render_html", "render_markdown", "summary_table"]
