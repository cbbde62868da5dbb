"""Draw book/figures/dino_diagram.svg (Chapter 3): python book/figures/make_dino_diagram.py"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

plt.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, scalable
plt.rcParams["svg.hashsalt"] = "teachkit"  # reproducible ids


def box(ax, xy, w, h, text, color):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=color, ec="black", lw=1.2))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=11)


def arrow(ax, a, b, text="", style="-|>", ls="-", color="black", offset=(0.0, 0.12)):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=14, lw=1.3, ls=ls,
                                 color=color))
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text,
                ha="center", fontsize=9.5, color=color)


fig, ax = plt.subplots(figsize=(9, 4.6))
ax.set_xlim(0, 10), ax.set_ylim(0, 5.2), ax.axis("off")
box(ax, (0.2, 2.1), 1.4, 1.0, "image $x$", "#eeeeee")
box(ax, (2.3, 3.5), 2.0, 1.0, "2 global views\n$x^g_1, x^g_2$", "#dbe9f6")
box(ax, (2.3, 0.7), 2.0, 1.0, "all views\nglobal + local", "#fde8d7")
box(ax, (5.0, 3.5), 1.7, 1.0, "teacher\n$g_{\\theta_t}$", "#dbe9f6")
box(ax, (5.0, 0.7), 1.7, 1.0, "student\n$g_{\\theta_s}$", "#fde8d7")
box(ax, (7.3, 3.5), 2.4, 1.0, "centre, sharpen\nsoftmax$((\\cdot - c)/\\tau_t)$", "#dbe9f6")
box(ax, (7.3, 0.7), 2.4, 1.0, "softmax$(\\cdot / \\tau_s)$", "#fde8d7")
box(ax, (7.75, 2.15), 1.5, 0.8, "$-P_t \\log P_s$", "#e6f2e1")
arrow(ax, (1.6, 2.8), (2.3, 4.0), "multi-crop", offset=(-0.55, 0.0))
arrow(ax, (1.6, 2.4), (2.3, 1.2))
arrow(ax, (4.3, 4.0), (5.0, 4.0))
arrow(ax, (4.3, 1.2), (5.0, 1.2))
arrow(ax, (6.7, 4.0), (7.3, 4.0))
arrow(ax, (6.7, 1.2), (7.3, 1.2))
arrow(ax, (8.5, 3.5), (8.5, 2.95), "$P_t$", offset=(0.3, -0.12))
arrow(ax, (8.5, 1.7), (8.5, 2.15), "$P_s$", offset=(0.3, -0.12))
arrow(ax, (5.85, 1.7), (5.85, 3.5), "EMA: $\\theta_t \\leftarrow \\lambda\\theta_t + (1-\\lambda)\\theta_s$",
      ls="--", color="#555555", offset=(-1.55, 0.05))
ax.text(6.7, 4.85, "stop-gradient: no backpropagation into the teacher", ha="center",
        fontsize=9, color="#1f4e79")
ax.text(6.7, 0.25, "gradients flow into the student only", ha="center", fontsize=9,
        color="#a0522d")
out = Path(__file__).with_name("dino_diagram.svg")
fig.savefig(out, bbox_inches="tight", metadata={"Date": None})
print(out)
