"""Plots of benchmark and evaluation rows (matplotlib, the ``[plot]`` extra, imported on use)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Sequence


def plot_results(rows: Sequence[Dict[str, Any]], path: str, y: str = "infer_samples_per_sec",
                 x: str = "infer_gmacs", title: str = "") -> None:
    """PNG of ``y`` against ``x`` per implementation (atomically written).

    With a single architecture there is no x to spread over, so it draws bars per implementation instead
    (inference and, when measured, training throughput, each labelled with its ratio to timm).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, FuncFormatter

    impls = list(dict.fromkeys(contender_label(r) for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if len({r.get("arch", r["model"]) for r in rows}) == 1 and y == "infer_samples_per_sec":
        _throughput_bars(ax, rows)
    else:
        markers = {"mixer_zoo": "o", "timm": "s", "mmpretrain": "^"}
        for impl in impls:
            sel = [r for r in rows if contender_label(r) == impl and r.get(x) is not None and r.get(y) is not None]
            ax.scatter([r[x] for r in sel], [r[y] for r in sel], marker=markers.get(impl, "x"), s=50, label=impl)
            if impl == "mixer_zoo":  # neighbours' labels sit at two distances up-right, so they never cross
                offsets = [((10, 8), "left"), ((22, 26), "left")]
                for i, r in enumerate(sorted(sel, key=lambda r: r[x])):
                    ratio = f" x{r['speedup_vs_timm']:.2f}" if r.get("speedup_vs_timm") else ""
                    offset, align = offsets[i % len(offsets)]
                    ax.annotate(r["model"].replace("_zoo", "") + ratio, (r[x], r[y]), fontsize=8, ha=align,
                                xytext=offset, textcoords="offset points", va="center",
                                arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4"))
        ax.set_xscale("log")
        if y.endswith("per_sec"):
            ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 6x10^0
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(FuncFormatter(_label_2_and_5))
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax.set_title(title or f"{y} vs {x}", fontsize=9)
    save_figure(fig, path)


def contender_label(row: Dict[str, Any]) -> str:
    """``impl``, plus the runtime and dtype when they are not the eager model in the run's dtype."""
    extra = [row[k] for k in ("runtime",) if row.get(k, "eager") != "eager"]
    extra += [row["dtype"]] if row.get("dtype") == "int8" else []
    return " ".join([row.get("impl", "mixer_zoo"), *extra])


def plot_accuracy_vs_throughput(rows: Sequence[Dict[str, Any]], path: str, title: str = "",
                                x: str = "infer_samples_per_sec", y: str = "top1") -> None:
    """PNG of accuracy against throughput, one labelled point per deployment path (atomically written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FormatStrFormatter

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for i, r in enumerate(sorted(rows, key=lambda r: -r[x])):  # points too close to label in place: a legend
        marker = "s" if r.get("impl") == "timm" else ("D" if r.get("dtype") == "int8" else "o")
        note = f", agreement {r['agreement']:.2f}%" if r.get("agreement") is not None else ""
        ax.scatter([r[x]], [r[y]], marker=marker, s=55, color=f"C{i % 10}",
                   label=f"{r['path']}: {r[y]:.2f}%{note}, {r[x]:.4g}/s")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"{x} (median, interleaved)")
    ax.set_ylabel(f"{y} (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title or f"{y} vs {x}", fontsize=8)
    save_figure(fig, path)


def save_figure(fig: Any, path: str) -> None:
    """Write a matplotlib figure as PNG through a temp file and a rename (never half a PNG), then close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def _label_2_and_5(value: float, _pos: Any) -> str:
    """Minor log-axis labels at 2x and 5x each power of ten only, so they never crowd."""
    import math

    if value <= 0:
        return ""
    return f"{value:g}" if round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else ""


def _throughput_bars(ax: Any, rows: Sequence[Dict[str, Any]]) -> None:
    phases = [p for p in ("infer", "train") if all(r.get(f"{p}_samples_per_sec") for r in rows)]
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        values = [r[f"{p}_samples_per_sec"] for p in phases]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(phases))]
        bars = ax.bar(xs, values, width, label=f"{r['model']} {contender_label(r)}")
        for bar, p in zip(bars, phases):
            ratio = r.get("speedup_vs_timm" if p == "infer" else "train_speedup_vs_timm")
            label = f"{bar.get_height():.3g}" + (f"\nx{ratio:.2f} timm" if ratio else "")
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(phases)), [f"{p} (batch {rows[0][p + '_batch_size']})" for p in phases])
    ax.set_ylabel("samples / s (median)")
    ax.margins(y=0.2)
    ax.legend(fontsize=8)
