"""Draw the panels of docs/grafana-kaiwa.json from series recorded by ``python -m bench.dashboard record``.

A stand-in for a Grafana screenshot where Grafana is not available (Debian
does not package it): the same panels, in the dashboard's order and layout
(three to a row), each with the series of its queries as Prometheus answered
them during the run. The image says what it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"
COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#ff780a"]


def _format(unit: str) -> FuncFormatter:
    def seconds(value: float, _pos: int) -> str:
        if value == 0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.0f} ms"
        return f"{value:.1f} s"

    def plain(value: float, _pos: int) -> str:
        if abs(value) >= 1e6:
            return f"{value / 1e6:.1f}M"
        if abs(value) >= 1e3:
            return f"{value / 1e3:.1f}k"
        return f"{value:g}"

    return FuncFormatter(seconds if unit == "s" else plain)


def render(recorded: Path, dashboard: Path, picture: Path) -> None:
    run = json.loads(recorded.read_text())
    panels: list[dict[str, Any]] = run["panels"]
    title = json.loads(dashboard.read_text())["title"]
    columns = 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(18, 3.3 * rows + 1.2), facecolor=BACKGROUND)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_facecolor(PANEL)
        ax.set_title(panel["title"], color=TEXT, fontsize=10, loc="left")
        ax.tick_params(colors=TEXT, labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(GRID)
        ax.grid(color=GRID, linewidth=0.6)
        ax.yaxis.set_major_formatter(_format(panel["unit"]))
        for n, series in enumerate(panel["series"]):
            xs = [p[0] for p in series["points"]]
            ys = [p[1] for p in series["points"]]
            ax.plot(xs, ys, linewidth=1.2, color=COLOURS[n % len(COLOURS)], label=series["legend"])
        for at, _text in run["phases"]:
            ax.axvline(at, color="#6e7681", linewidth=0.8, linestyle=":")
        ax.set_xlim(0, run["seconds"])
        ax.set_xlabel("seconds into the run", color=TEXT, fontsize=8)
        if panel["series"]:
            ax.legend(fontsize=7, facecolor=PANEL, edgecolor=GRID, labelcolor=TEXT, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
    phases = "   ".join(f"{at:.0f} s: {text}" for at, text in run["phases"])
    fig.suptitle(
        f"{title} dashboard (docs/grafana-kaiwa.json): its panels drawn with matplotlib from Prometheus range queries "
        f"recorded during a {run['seconds']:.0f} s bench run (bench/dashboard.py) - not a Grafana screenshot",
        color=TEXT,
        fontsize=11,
        x=0.01,
        ha="left",
    )
    fig.text(0.01, 0.005, "Phases (dotted lines): " + phases, color=TEXT, fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    picture.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(picture, dpi=90, facecolor=BACKGROUND)
    plt.close(fig)
    print(f"wrote {picture}")
