"""The one exception type for errors a user can cause.

The CLI prints a :class:`CaloforgeError` as one line and exits non-zero; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CaloforgeError", "require_extra"]


class CaloforgeError(Exception):
    """A problem with the user's input or environment, with a message saying what to do."""


def require_extra(module: str, extra: str):
    """Import an optional dependency or raise a :class:`CaloforgeError` naming the extra.

    Args:
        module: the module to import, e.g. ``"onnxruntime"``.
        extra: the caloforge extra that installs it, e.g. ``"onnx"``.

    Returns:
        The imported module.

    Raises:
        CaloforgeError: the module is not installed; the message names the pip extra.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CaloforgeError(
            f"{module} is not installed; install it with: pip install 'caloforge[{extra}]' "
            f"(in a clone of caloforge: pip install -e '.[{extra}]')"
        ) from err
