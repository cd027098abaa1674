"""Headless matplotlib set-up and the colorblind-safe palette every torchvat figure uses."""

from __future__ import annotations

from typing import Any

from torchvat._extras import require

__all__ = ["METHOD_COLORS", "OKABE_ITO", "color_for", "pyplot"]

#: The Okabe-Ito palette (safe for the common color-vision deficiencies).
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)

#: Fixed colors for the built-in methods, so a method has the same color in every figure.
METHOD_COLORS: dict[str, str] = {
    "supervised": "#7F7F7F",
    "rpt": "#CC79A7",
    "at": "#E69F00",
    "vat": "#0072B2",
    "vat+ent": "#009E73",
    "at+vat": "#D55E00",
}

_RC: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.dpi": 120,
    "figure.dpi": 100,
}


def color_for(method: str, index: int = 0) -> str:
    """The color of a method: its fixed color, or the ``index``-th palette entry.

    Args:
        method: Method name.
        index: Position among the plotted series, used for unknown methods.

    Returns:
        A hex color string.

    Example:
        >>> color_for("vat")
        '#0072B2'
        >>> color_for("my-method", 1)
        '#D55E00'
    """
    return METHOD_COLORS.get(method, OKABE_ITO[index % len(OKABE_ITO)])


def pyplot() -> Any:
    """Import ``matplotlib.pyplot`` on the headless Agg backend with torchvat's style.

    The backend is switched only if pyplot has not been imported yet by someone else, so
    an interactive session keeps its own backend (saving figures works with any backend).

    Returns:
        The ``matplotlib.pyplot`` module.

    Raises:
        MissingExtraError: If matplotlib is not installed (naming ``torchvat[cli]``).
    """
    import sys

    matplotlib = require("matplotlib", extra="cli", feature="drawing torchvat's figures")
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", extra="cli", feature="drawing torchvat's figures")

    plt.rcParams.update(_RC)
    return plt
