"""``python -m pipelines``: one command line for every stage (probe, train, fit, render, evaluate, convert).

Each command lives beside its stage as ``add_<name>_command(subparsers)``; this module only collects
them, configures logging and runs the chosen one. Engine modules never parse arguments themselves.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main"]

logger = logging.getLogger("pipelines")

# command name → "module:function" that adds the sub-parser (and sets ``func``). Imported lazily so
# `probe` doesn't pay for torch; a stage whose optional dependencies are missing drops out with a log line.
_COMMANDS: dict[str, str] = {
    "probe": ".media_cli:add_probe_command",
    "train": ".train.cli:add_train_command",
    "fit": ".render_cli:add_fit_command",
    "render": ".render_cli:add_render_command",
    "evaluate": ".evaluate_cli:add_evaluate_command",
    "convert": ".convert:add_convert_command",
}


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines", description="LandmarkTalk engine command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice). On a machine shared with other jobs "
                             "use 1 per process: oversubscribed threads made L2V training ~9x slower here "
                             "(docs/PERFORMANCE.md)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, target in _COMMANDS.items():
        # Only the chosen command's module is imported; the others get a placeholder entry for --help.
        if command is not None and name != command:
            subparsers.add_parser(name, add_help=False)
            continue
        module_name, function_name = target.split(":")
        try:
            getattr(importlib.import_module(module_name, __package__), function_name)(subparsers)
        except ImportError:
            logger.debug("command %s unavailable", name, exc_info=True)
            if command == name:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for i, a in enumerate(argv) if not a.startswith("-") and (i == 0 or argv[i - 1] != "--threads")),
                   None)
    parser = _build_parser(command if command in _COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.threads is not None:
        if args.threads < 1:
            logger.error("--threads %d: give 1 or more", args.threads)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        # Engine errors already name the input and the fix; a traceback adds nothing for a user.
        logger.error("%s", exc)
        logger.debug("traceback", exc_info=True)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
