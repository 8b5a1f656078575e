"""Name → model builder registry.

Each model family registers its builder with :func:`register`; a study looks models up by name with
:func:`build`. Builders take keyword parameters from the study config and return an unfitted model
that follows the contract :class:`medlens.models.base.Model`. Adding a family means writing one file in
``medlens/models/`` (a class decorated with ``@register("name")``) and naming it in
:data:`_FAMILY_MODULES`; nothing else asks for a model's name.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable

from medlens.errors import ConfigError
from medlens.models.base import Model


_BUILDERS: dict[str, Callable[..., Model]] = {}
# Modules whose import registers the built-in models.
_FAMILY_MODULES = ("medlens.models.mlp", "medlens.models.classical", "medlens.models.twostage",
                   "medlens.models.cnn", "medlens.models.sequence", "medlens.models.ensemble")


def register(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator: register ``builder`` under ``name``."""

    def decorate(builder: Callable[..., Model]) -> Callable[..., Model]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model name {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorate


def _load_families() -> None:
    for module in _FAMILY_MODULES:
        import_module(module)


def available() -> list[str]:
    """Sorted names of every registered model."""
    _load_families()
    return sorted(_BUILDERS)


def build(name: str, **params: Any) -> Model:
    """An unfitted model ``name`` with ``params``; :class:`ConfigError` for unknown names or params."""
    _load_families()
    if name not in _BUILDERS:
        raise ConfigError(f"models: unknown model {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    try:
        return _BUILDERS[name](**params)
    except TypeError as exc:
        raise ConfigError(f"models.{name}: {exc}") from exc
