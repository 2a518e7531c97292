"""Order of the examples in the gallery: a reading path, not the alphabet."""

from __future__ import annotations

ORDER = [
    "plot_quickstart.py",
    "plot_compare_backbones.py",
    "plot_user_history.py",
    "plot_loss_weights.py",
    "plot_critic_transfer.py",
    "plot_grid_search.py",
    "plot_serving_onnx.py",
    "plot_load_raw_datasets.py",
]


class ExampleOrder:
    """Sort key of sphinx-gallery: listed files first, in ``ORDER``."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        rank = ORDER.index(filename) if filename in ORDER else len(ORDER)
        return rank, filename

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
