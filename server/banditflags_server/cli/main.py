"""The ``banditflags`` command: ``serve`` runs the sync server, ``demo`` a bandit learning live,
``flags ...`` manages flags on a running server (:mod:`banditflags_server.cli.flags`), ``segments ...``
their reusable segments (:mod:`banditflags_server.cli.segments`),
``simulate`` compares bandit policies on synthetic arms.

Exit codes: 0 ok, 1 runtime failure (e.g. the database cannot be opened), 2 usage error (bad options or
settings, or the server extra not installed); ``flags`` and ``segments`` add 3 (no such flag or segment)
and 4 (input rejected).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from banditflags_server import __version__
from banditflags_server.cli import flags as cli_flags
from banditflags_server.cli import segments as cli_segments

SERVER_MODULES = ("numpy", "starlette", "uvicorn", "sqlalchemy")
MISSING_EXTRA = (
    "banditflags: the server is not installed ({missing} is missing).\n"
    "Install it with:  pip install 'banditflags[server]'"
)


def _check_extra() -> str | None:
    """The first missing server dependency, or None."""
    for name in SERVER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the sync server",
        description="Run the banditflags sync server. Options override the environment "
        "(BANDITFLAGS_DB, BANDITFLAGS_HOST, BANDITFLAGS_PORT, BANDITFLAGS_RECOMPUTE_INTERVAL, "
        "BANDITFLAGS_ADMIN_KEY, BANDITFLAGS_SDK_KEY).",
    )
    p.add_argument(
        "--db", help="SQLite path or database URL, e.g. postgresql://user@host/db (default ./banditflags.db)"
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080; 0: a free port)")
    p.add_argument("--recompute-interval", type=float, help="default seconds between weight updates (60)")
    p.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default info)",
    )


def _optional_module(name: str) -> ModuleType | None:
    """A subcommand's module, or None when a dependency of the server extra is missing (a broken import
    of our own is a bug and raises)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] in ("banditflags_server", "banditflags"):
            raise
        return None


def _demo_module() -> ModuleType | None:
    return _optional_module("banditflags_server.cli.demo")


def _simulate_module() -> ModuleType | None:
    return _optional_module("banditflags_server.cli.simulate")


def build_parser(
    demo: ModuleType | None = None, simulate: ModuleType | None = None
) -> argparse.ArgumentParser:
    """The argument parser; the demo and the simulator register their own options when available."""
    parser = argparse.ArgumentParser(
        prog="banditflags", description="Feature flags with an embedded multi-armed bandit."
    )
    parser.add_argument("--version", action="version", version=f"banditflags {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    demo_parser = sub.add_parser("demo", help="watch a bandit learn through the real SDK and server")
    if demo is not None and hasattr(demo, "add_arguments"):
        demo.add_arguments(demo_parser)
    cli_flags.add_parser(sub)
    cli_segments.add_parser(sub)
    sim_parser = sub.add_parser("simulate", help="compare bandit policies on synthetic arms (regret, plots)")
    if simulate is not None and hasattr(simulate, "add_arguments"):
        simulate.add_arguments(sim_parser)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from banditflags_server.cli.serve import serve
    from banditflags_server.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(
            db=args.db,
            host=args.host,
            port=args.port,
            recompute_interval=args.recompute_interval,
            log_level=args.log_level,
        )
    except SettingsError as exc:
        print(f"banditflags serve: {exc}", file=sys.stderr)
        return 2
    try:
        serve(settings)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        # The message names the failure (e.g. the database cannot be opened); no key is part of it.
        print(f"banditflags serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    wants_server = (
        bool(argv) and argv[0] in ("serve", "demo", "simulate") and not {"-h", "--help"} & set(argv)
    )
    missing = _check_extra() if wants_server else None
    if missing is not None:
        print(MISSING_EXTRA.format(missing=missing), file=sys.stderr)
        return 2
    demo = _demo_module() if argv[:1] == ["demo"] else None
    simulate = _simulate_module() if argv[:1] == ["simulate"] else None
    parser = build_parser(demo, simulate)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("flags", "segments"):
        try:
            return cli_flags.run(args) if args.command == "flags" else cli_segments.run(args)
        except BrokenPipeError:  # `banditflags flags rules KEY | head`: the reader left; not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.command == "demo":
        if demo is None:
            print("banditflags demo: the demo is not available in this installation", file=sys.stderr)
            return 1
        rc: int = demo.run(args)
        return rc
    if args.command == "simulate":
        if simulate is None:
            print(
                "banditflags simulate: the simulator is not available in this installation", file=sys.stderr
            )
            return 1
        src: int = simulate.run(args)
        return src
    parser.print_help(sys.stderr)
    return 2
