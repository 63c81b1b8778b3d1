"""caloforge: fast calorimeter shower simulation with deep generative models."""

from caloforge._version import __version__
from caloforge.errors import CaloforgeError

__all__ = ["__version__", "CaloforgeError", "load_pretrained"]


def __getattr__(name: str):
    # load_pretrained imports torch: only when asked for, so `import caloforge` stays light
    if name == "load_pretrained":
        from caloforge.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'caloforge' has no attribute {name!r}")
