"""What the figures share: a headless matplotlib, line colours, writing a PNG safely."""
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed, and no GUI toolkit is ever imported


def line_colours(n):
    """n distinct line colours: tab10, or tab20 for more than 10 lines."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def save_figure(fig, path, dpi):
    """Write a PNG so that a crash leaves the old file or the new one, never a part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
