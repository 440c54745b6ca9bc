"""Figure helpers, in one place (d2l style): the paper style, common plots, and saving
with provenance.

Every saved figure is a PDF (fonts embedded as TrueType, Type 42) and a PNG, written
atomically, with the provenance (commit, preset, corpus, config hash) in the PDF's
metadata and in a sidecar ``<name>.json``. Plots use line styles and markers besides
colour, so they read in greyscale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: Greyscale-safe encodings: a line style and a marker per series.
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def paper_style() -> None:
    """seaborn's paper context, embedded TrueType fonts, a colour-blind palette."""
    import matplotlib
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight",
                                "figure.dpi": 110, "savefig.dpi": 200})


def save_figure(fig, path: str | Path, provenance: dict[str, Any]) -> list[Path]:
    """Write ``path`` as .pdf and .png (atomic) plus ``path.json`` with the provenance."""
    from .runs import atomic_path, atomic_write_json

    path = Path(path)
    written = []
    meta = {"Title": path.stem, "Creator": "emolib", "Subject": provenance.get("corpus", ""),
            "Keywords": " ".join(f"{k}={v}" for k, v in sorted(provenance.items()) if not isinstance(v, (dict, list)))}
    for suffix in (".pdf", ".png"):
        target = path.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], metadata=meta if suffix == ".pdf" else {"Software": "emolib"})
        written.append(target)
    atomic_write_json(path.with_suffix(".json"), provenance)
    return written


def confusion_matrix(ax, confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str = "",
                     normalise: bool = True) -> None:
    """Rows = true class; cells show row-normalised recall (and counts when not normalised)."""
    cm = np.asarray(confusion, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    ax.imshow(shown, cmap="Greys", vmin=0, vmax=1 if normalise else shown.max())
    for i in range(len(classes)):
        for j in range(len(classes)):
            v = shown[i, j]
            ax.text(j, i, f"{v:.2f}" if normalise else f"{int(v)}", ha="center", va="center",
                    color="white" if v > (0.5 if normalise else shown.max() / 2) else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    if title:
        ax.set_title(title)


def learning_curves(ax, history, columns: Sequence[str], title: str = "", secondary: str | None = "val_ua",
                    ylabel: str = "training loss") -> None:
    """Training-loss terms per epoch, and the validation UA on a second axis."""
    for k, col in enumerate(c for c in columns if c in history):
        ax.plot(history["epoch"], history[col], LINESTYLES[k % 4], marker=MARKERS[k % 6], markersize=3,
                label=col.replace("train_", ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    handles, labels = ax.get_legend_handles_labels()
    if secondary and secondary in history:
        ax2 = ax.twinx()
        ax2.plot(history["epoch"], 100 * history[secondary], color="black", lw=1.5, label="validation UA")
        ax2.set_ylabel("validation UA (%)")
        ax2.grid(False)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=7, loc="best")
    if title:
        ax.set_title(title)
