"""What every figure of the book shares: the head and tail colours and a figure that pyplot shows once."""

from __future__ import annotations

HEAD_COLOR, TAIL_COLOR = "#4c72b0", "#dd8452"


def subplots(nrows: int = 1, ncols: int = 1, **kw):
    """``plt.subplots`` and close at once: the figure is shown once, when the notebook displays it
    (pyplot would show it again at the end of the cell)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, **kw)
    plt.close(fig)
    return fig, axes
