"""What every ``router-stream`` subcommand that reads a config shares: the ``--config`` option
(the positional form still accepted) and loading the file the way a worker does.

Kept out of :mod:`router_stream.cli` so the command groups in other modules (``send``/``tail``,
the learned router's) use the same option without importing the top-level parser, and light:
nothing here imports the config models until a command runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RouterConfig

CONFIG_HELP = (
    "the routing config YAML (candidates, strategies, topics, kafka); also accepted as the last argument"
)


def add_config_option(
    parser: argparse.ArgumentParser, required: bool = True, help: str = CONFIG_HELP
) -> None:
    """``--config PATH`` plus an optional positional ``CONFIG``; :func:`resolve_config` merges them."""
    parser.add_argument("--config", metavar="PATH", default=None, help=help)
    parser.add_argument(
        "config_positional", nargs="?", default=None, metavar="CONFIG", help=argparse.SUPPRESS
    )
    parser.set_defaults(config_required=required, config_parser=parser)


def resolve_config(args: argparse.Namespace) -> None:
    """Set ``args.config`` from either form; a usage error (exit 2) if missing or given twice differently."""
    parser = getattr(args, "config_parser", None)
    if parser is None:
        return
    positional = args.config_positional
    if positional is not None and args.config is not None and positional != args.config:
        parser.error(f"two configs given ({args.config} and {positional}); give one, as --config PATH")
    args.config = args.config or positional
    if args.config is None and args.config_required:
        parser.error("the config file is required: --config routing.yaml")


def load(path: str) -> RouterConfig:
    """Load the config at ``path`` with its directory and the working directory importable, so a
    custom strategy's ``class: "myrouter:R"`` finds ``myrouter.py`` next to the config (or in the
    directory the command runs in) without PYTHONPATH."""
    from .config import load_config
    from .routing.custom import add_import_dirs

    add_import_dirs(path)
    return load_config(path)
