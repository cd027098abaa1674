"""Reports: PNG figures drawn headless with matplotlib, Markdown reports and tables.

- :func:`plot_decision_boundaries`, :func:`plot_learning_curves`, :func:`plot_comparison`,
  :func:`plot_robustness`, :func:`plot_perturbation_grid`: one PNG each.
- :class:`Report`: a ``report.md`` that embeds the figures; :func:`text_table` and
  :func:`markdown_table` for the terminal and the report.
- :func:`read_metrics`: the evaluation records of a ``metrics.jsonl`` file.
"""

from torchvat.report.document import Report, format_cell, markdown_table, text_table
from torchvat.report.figures import (
    DPI,
    plot_comparison,
    plot_decision_boundaries,
    plot_learning_curves,
    plot_perturbation_grid,
    plot_robustness,
)
from torchvat.report.metrics import read_metrics
from torchvat.report.style import METHOD_COLORS, OKABE_ITO, color_for, pyplot

__all__ = [
    "DPI",
    "METHOD_COLORS",
    "OKABE_ITO",
    "Report",
    "color_for",
    "format_cell",
    "markdown_table",
    "plot_comparison",
    "plot_decision_boundaries",
    "plot_learning_curves",
    "plot_perturbation_grid",
    "plot_robustness",
    "pyplot",
    "read_metrics",
    "text_table",
]
