"""Generative models, one module per family, found through a registry.

A family registers itself with :func:`register_model`; every module in this package is
imported when the registry is first asked, so a new family only adds a module::

    @register_model("myflow")
    class MyFlow(GenerativeModel):
        Config = MyFlowConfig
        ...
"""

from __future__ import annotations

import importlib
import pkgutil

from caloforge.errors import CaloforgeError
from caloforge.models.base import Conditioning, GenerativeModel, ModelConfig

__all__ = [
    "register_model",
    "get_model_class",
    "available_models",
    "build_model",
    "GenerativeModel",
    "ModelConfig",
    "Conditioning",
]

_REGISTRY: dict[str, type[GenerativeModel]] = {}
_NOT_FAMILIES = {"base", "layers"}
_discovered = False


def register_model(name: str):
    """Class decorator: register a :class:`GenerativeModel` subclass under ``name``.

    Raises:
        TypeError: the decorated object is not a GenerativeModel subclass.
        ValueError: ``name`` is already registered by another class.
    """

    def decorate(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
            raise TypeError(f"@register_model({name!r}) needs a GenerativeModel subclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name]}")
        cls.family = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_FAMILIES:
            continue
        importlib.import_module(f"{__name__}.{info.name}")


def available_models() -> list[str]:
    """Names of all registered model families."""
    _discover()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[GenerativeModel]:
    """The class registered under ``name``.

    Raises:
        CaloforgeError: an unknown name; the message lists the registered ones.
    """
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise CaloforgeError(f"unknown model {name!r}; available models: {known}") from None


def build_model(name: str, geometry, config: ModelConfig | dict | None,
                conditioning: Conditioning) -> GenerativeModel:
    """Build family ``name`` from a geometry, a config (object, dict or ``None`` for the
    defaults) and a conditioning range.

    Raises:
        CaloforgeError: an unknown family, a bad setting, or a geometry whose conditions
            the family cannot take.

    Examples:
        An untrained CaloGAN (tiny networks) draws showers in MeV from incident energies
        in MeV:

        >>> import torch
        >>> from caloforge.geometry import get_geometry
        >>> model = build_model("calogan", get_geometry("calogan"),
        ...                     get_model_class("calogan").tiny_config(), Conditioning())
        >>> showers = model.sample(torch.full((2, 1), 5e4), torch.Generator().manual_seed(0))
        >>> tuple(showers.shape), bool((showers >= 0).all())
        ((2, 504), True)
    """
    cls = get_model_class(name)
    if not isinstance(config, ModelConfig):
        config = cls.Config.from_dict(config or {}, where=f"{name} config")
    return cls(geometry, config, conditioning)
