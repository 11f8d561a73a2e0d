"""The ``adabench`` command line: one module per subcommand in ``adabench.commands``.

User mistakes raise :class:`UserError` anywhere below; they are printed as one line and
exit with code 2. Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from adabench.errors import EXIT_USER_ERROR, UserError

COMMANDS = ("compare", "aggregate", "merge", "regress", "report", "generate", "list", "score", "train")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors reduced to one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adabench", description="Benchmark suite for streaming video diffusion.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"adabench.commands.{name.replace('-', '_')}")
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


class Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``, a cancelled CI job, torchrun stopping its workers), raised where the
    program is, so that it unwinds like Ctrl-C: temporaries removed, what was there before kept."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    try:
        with sigterm_unwinds():
            args = build_parser().parse_args(argv)
            args._argv = list(sys.argv[1:] if argv is None else argv)
            return int(args._run(args) or 0)
    except UserError as exc:
        print(f"adabench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("adabench: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("adabench: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:              # the reader went away (`adabench list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit flush
        return 141                       # 128 + SIGPIPE, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
