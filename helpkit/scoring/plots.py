"""ROC curves as PNG (matplotlib's Agg backend: no display needed, safe in containers)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from helpkit.io import atomic_path
from helpkit.scoring.metrics import auc_ci


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC") -> Path:
    """Draw one ROC curve per ``name -> (labels, scores)``, legend with AUC and 95% CI; atomic PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    try:
        for name, (labels, scores) in curves.items():
            fpr, tpr, _ = roc_curve(labels, scores)
            result = auc_ci(labels, scores)
            ax.plot(fpr, tpr, lw=1.5, label=f"{name}: {result.auc:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}]")
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize="small", title="AUC [95% CI]")
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return path
