"""`dxr` command line. Each subcommand parses options and calls library functions, nothing else.

Each feature package that has subcommands holds them in ``dxr_core/<pkg>/commands.py`` with a function
``add_commands(subparsers)`` that adds its sub-parsers and sets ``run=<function(args) -> int>`` on each;
``dxr demo`` (the main job) lives in ``dxr_core/demo.py``.
"""
from __future__ import annotations

import argparse
import sys
import importlib
import pkgutil
from pathlib import Path
from typing import Sequence

from dxr_core.errors import DXRError

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # unknown options: one clear line, exit 2, no traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"dxr: error: {message}. Run `{self.prog} --help` for the options.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dxr", description="DiffusionXRay: chest CT to realistic chest radiographs.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    import dxr_core

    # Only packages that hold a commands.py are imported (a file check, so `dxr --help` does not import the
    # torch-heavy packages that have no subcommands); the packages themselves export lazily.
    for mod in sorted(pkgutil.iter_modules(dxr_core.__path__), key=lambda m: m.name):
        if mod.ispkg and (Path(mod.module_finder.path) / mod.name / "commands.py").is_file():
            importlib.import_module(f"dxr_core.{mod.name}.commands").add_commands(sub)
    from dxr_core import demo

    demo.add_commands(sub)
    return parser


def _version() -> str:
    from dxr_core import __version__

    return f"dxr {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except DXRError as err:
        print(f"dxr {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dxr: interrupted; finished outputs are kept and a rerun resumes.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
