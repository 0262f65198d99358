"""Bring your own strategy: a class of yours, named in the config or installed as an entry point.

Example::

    - type: custom
      name: by-length
      class: "router_stream_dev.example_strategy:ByLength"   # "package.module:ClassName"
      config: {threshold: 200, short: cheap, long: smart}           # given to your class, as is
      candidates: [cheap, smart]   # optional: names your class may pick, checked at config load

    - type: custom
      name: house-router
      entry_point: house           # instead of class: a name in the group ``router_stream.strategies``
      config: {...}

Exactly one of ``class`` and ``entry_point`` is given. An entry point is declared by the package
that ships the class, e.g. in its ``pyproject.toml``::

    [project.entry-points."router_stream.strategies"]
    house = "house_routing.strategy:HouseRouter"

**Where ``class:`` is looked for.** ``router-stream`` commands put the config file's directory and
the working directory at the front of ``sys.path`` before loading the config (see
:func:`add_import_dirs`), so ``class: "myrouter:R"`` finds ``myrouter.py`` beside the config or in
the directory the command runs in, without setting ``PYTHONPATH`` (a file there shadows an
installed module of the same name, as with ``python -m``).

**Resolved at config load.** The class is imported (or the entry point loaded) while the config is
validated, so ``router-stream check-config`` and worker start-up fail on a bad one, naming the
field and the class, e.g. ``strategies[2].class: cannot import 'pkg.mod:X': ModuleNotFoundError:
No module named 'pkg'``. It must be a class with an ``async def decide(self, request, ctx)``
method; anything else is a config error too. An unknown entry point name lists the installed ones.

**The contract.** Your class is instantiated once per worker, when the pipeline is built:

* if its ``__init__`` has a parameter named ``config``, it is called with keywords: ``config``
  (the ``config:`` mapping, a plain ``dict``), plus ``name`` (the strategy's name) and
  ``candidates`` (a tuple of all configured candidate names, in config order) for those it
  declares (all three when it also takes ``**kwargs``);
* otherwise it is called as ``cls(**config)``: the ``config:`` mapping as keyword arguments.

A constructor that raises fails the pipeline build with a :class:`~router_stream.errors.ConfigError`
naming the strategy and the class.

Then, for each request the pipeline asks it, ``await instance.decide(request, ctx)`` gets a
:class:`~router_stream.schemas.Request` and a :class:`~router_stream.routing.base.RoutingContext`
(``ctx.key`` the cache-scope key, ``ctx.candidates``, ``ctx.headers`` the trace headers,
``ctx.now_ms`` the record's time) and returns:

* a :class:`~router_stream.routing.base.Decision` to choose a candidate (``reason`` and
  ``detail`` go to the audit; ``cacheable=False`` keeps it out of the sticky decision cache), or
* ``None`` to abstain, so the next strategy is asked; call ``ctx.explain("why")`` first to put
  the reason in the audit.

Its decision is checked by the pipeline like any other strategy's: a name that is not a candidate
is a routing *miss* and the next strategy is asked; an exception (or a return value that is
neither a ``Decision`` nor ``None``) is recorded as an ``error`` verdict and skipped, so a broken
custom strategy degrades routing without stopping the worker. In the audit and metrics the
strategy is called by its config ``name`` (whatever the instance's own ``name`` says). If the
instance has an ``async def aclose(self)``, the worker awaits it at shutdown (close your
clients there). ``decide`` runs on the worker's event loop: never block in it (no synchronous
I/O; use an async client, or ``asyncio.to_thread`` for CPU-heavy work).

``dev/router_stream_dev/example_strategy.py`` is a complete example.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import os
import sys
from importlib import metadata
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..errors import ConfigError
from ..schemas import Request
from .base import Decision, RoutingContext
from .pipeline import close_strategy
from .strategy_config import BuildContext, StrategyConfigBase

ENTRY_POINT_GROUP = "router_stream.strategies"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _check_strategy_class(obj: Any, what: str) -> type:
    """``obj`` if it is a class with an async ``decide``; else ValueError naming ``what``."""
    if not inspect.isclass(obj):
        raise ValueError(f"{what} is not a class (got {type(obj).__name__})")
    decide = getattr(obj, "decide", None)
    if decide is None:
        raise ValueError(f"{what} is not a strategy: it has no 'async def decide(self, request, ctx)' method")
    if not inspect.iscoroutinefunction(decide):
        raise ValueError(f"{what} is not a strategy: its decide() must be 'async def' (a coroutine function)")
    return obj


def import_class(spec: str) -> type:
    """The class named by ``"package.module:ClassName"`` (``ClassName`` may be dotted, ``Outer.Inner``)."""
    module_name, sep, attr_path = spec.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not sep or not module_name or not attr_path:
        raise ValueError(f"{spec!r} is not of the form 'package.module:ClassName'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise ValueError(f"cannot import {spec!r}: {_short(exc)}") from None
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"cannot import {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return _check_strategy_class(obj, repr(spec))


def add_import_dirs(config_path: str | os.PathLike[str]) -> list[str]:
    """Put ``config_path``'s directory, then the working directory, first on ``sys.path`` (each
    once); return the directories added. Why: a strategy written beside the config is the common
    case, and a console script (unlike ``python -m``) does not put the working directory there."""
    added = []
    for directory in reversed((os.path.dirname(os.path.abspath(config_path)), os.getcwd())):
        if directory not in sys.path:
            sys.path.insert(0, directory)
            added.append(directory)
    return added


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_entry_point(name: str) -> type:
    """The class registered as ``name`` in the entry point group ``router_stream.strategies``."""
    found = {ep.name: ep for ep in _entry_points()}
    ep = found.get(name)
    if ep is None:
        available = ", ".join(sorted(found)) or "none installed"
        raise ValueError(f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r} (available: {available})")
    what = f"entry point {name!r} ({ep.value})"
    try:
        obj = ep.load()
    except Exception as exc:
        raise ValueError(f"cannot load {what}: {_short(exc)}") from None
    return _check_strategy_class(obj, what)


class CustomConfig(StrategyConfigBase):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["custom"]
    name: str = "custom"
    class_: str | None = Field(None, alias="class", description="'package.module:ClassName'")
    entry_point: str | None = Field(
        None, description=f"a name in the entry point group {ENTRY_POINT_GROUP!r}"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="given to the class, as is")
    candidates: list[str] = Field(
        default_factory=list, description="names the class may pick (checked at load)"
    )

    _cls: builtins.type | None = PrivateAttr(None)  # the ``type`` field shadows the builtin here

    @model_validator(mode="before")
    @classmethod
    def _not_both(cls, data: Any) -> Any:
        """Both given: say so first, before trying to import either (one error, the real one)."""
        if (
            isinstance(data, dict)
            and data.get("entry_point") is not None
            and (data.get("class") is not None or data.get("class_") is not None)
        ):
            raise ValueError(
                "give exactly one of 'class' (e.g. 'package.module:ClassName') and 'entry_point', not both"
            )
        return data

    @field_validator("class_")
    @classmethod
    def _importable(cls, v: str | None) -> str | None:
        if v is not None:
            import_class(v)  # raises ValueError naming the class; the error path is strategies[i].class
        return v

    @field_validator("entry_point")
    @classmethod
    def _loadable(cls, v: str | None) -> str | None:
        if v is not None:
            load_entry_point(v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CustomConfig:
        if (self.class_ is None) == (self.entry_point is None):
            raise ValueError(
                "give exactly one of 'class' (e.g. 'package.module:ClassName') and 'entry_point'"
            )
        return self

    @property
    def source(self) -> str:
        """How the config names the class, for messages: ``class 'x:Y'`` or ``entry point 'y'``."""
        return f"class {self.class_!r}" if self.class_ is not None else f"entry point {self.entry_point!r}"

    def strategy_class(self) -> builtins.type:
        if self._cls is None:
            try:
                self._cls = (
                    import_class(self.class_)
                    if self.class_ is not None
                    else load_entry_point(self.entry_point or "")
                )
            except ValueError as exc:  # the environment changed since the config was loaded
                raise ConfigError(f"custom strategy {self.name!r}: {exc}") from None
        return self._cls

    def referenced_candidates(self) -> list[tuple[str, str]]:
        return [(f".candidates[{i}]", name) for i, name in enumerate(self.candidates)]

    def always_decides(self) -> str | None:
        """None: what user code does is not known at load."""
        return None

    def build(self, ctx: BuildContext) -> CustomStrategy:
        cls = self.strategy_class()
        candidates = ctx.names or tuple(self.candidates)
        try:
            instance = cls(**constructor_kwargs(cls, self.name, dict(self.config), candidates))
        except Exception as exc:
            raise ConfigError(
                f"custom strategy {self.name!r}: {self.source} could not be created: {_short(exc)}"
            ) from None
        return CustomStrategy(self.name, instance)


def constructor_kwargs(
    cls: type, name: str, config: dict[str, Any], candidates: tuple[str, ...]
) -> dict[str, Any]:
    """The keyword form (``name``/``config``/``candidates``) when ``__init__`` takes ``config``, else ``config``."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no introspectable signature: the plain form
        return dict(config)
    offered = {"name": name, "config": config, "candidates": candidates}
    named = {
        p for p, param in params.items() if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }
    if "config" not in named:
        return dict(config)
    if any(param.kind is param.VAR_KEYWORD for param in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in named}


class CustomStrategy:
    """Wraps the user's instance: the config's name, and a checked return value."""

    def __init__(self, name: str, inner: Any) -> None:
        self.name = name
        self.inner = inner

    async def decide(self, request: Request, ctx: RoutingContext) -> Decision | None:
        decision = await self.inner.decide(request, ctx)
        if decision is not None and not isinstance(decision, Decision):
            raise TypeError(f"decide() returned {type(decision).__name__}, expected a Decision or None")
        return decision

    async def aclose(self) -> None:
        await close_strategy(self.inner)
