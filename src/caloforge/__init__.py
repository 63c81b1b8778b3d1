"""caloforge: fast calorimeter shower simulation with deep generative models."""

from caloforge._version import __version__
from caloforge.errors import CaloforgeError

__all__ = ["__version__", "CaloforgeError"]
