"""Shower data: the in-memory :class:`ShowerSet` and the on-disk formats."""

from caloforge.data.formats import (
    FileInfo,
    ShowerWriter,
    file_info,
    iter_showers,
    read_showers,
    write_showers,
)
from caloforge.data.showers import ShowerSet, concatenate

__all__ = [
    "ShowerSet",
    "concatenate",
    "read_showers",
    "iter_showers",
    "write_showers",
    "ShowerWriter",
    "file_info",
    "FileInfo",
]
