"""ROC plots for the verification results (docs/method.md §4.7).

Uses matplotlib's object API with the Agg canvas directly, so it writes PNGs on a
headless machine without touching the global pyplot backend of whoever imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .verification import auc


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "ROC",
             log_x: bool = False) -> Path:
    """Write one PNG with a ROC curve per entry of ``curves`` ({name: (fpr, tpr)}); returns the path.

    The legend shows each curve's AUC (computed on the linear axis). With ``log_x`` the
    FPR axis is logarithmic, which shows the low-FAR region TAR@FAR reads from; points at
    FPR = 0 cannot be drawn there and are left out.
    """
    figure = Figure(figsize=(5.0, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    smallest_positive = 1.0
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
        label = f"{name} (AUC {auc(fpr, tpr):.3f})"
        if log_x:
            keep = fpr > 0
            if np.any(keep):
                smallest_positive = min(smallest_positive, float(fpr[keep].min()))
            fpr, tpr = fpr[keep], tpr[keep]
        # Straight segments between ROC points: a staircase without ties, the exact diagonal across tied
        # scores, and the same curve the trapezoid AUC integrates.
        axes.plot(fpr, tpr, linewidth=1.5, label=label)
    if log_x:
        axes.set_xscale("log")
        axes.set_xlim(smallest_positive, 1.0)
        chance = np.logspace(np.log10(smallest_positive), 0.0, 50)
    else:
        axes.set_xlim(0.0, 1.0)
        chance = np.linspace(0.0, 1.0, 2)
    axes.plot(chance, chance, linestyle=":", color="gray", linewidth=1.0, label="chance")
    axes.set_ylim(0.0, 1.005)
    axes.set_xlabel("false accept rate (FPR)")
    axes.set_ylabel("true accept rate (TPR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
