"""Entry point of the ``torchvat`` command line: ``torchvat SUBCOMMAND [options]``.

Subcommands: ``demo``, ``train``, ``compare``, ``evaluate``, ``visualize``, ``env``. Errors are
one line on standard error, ``torchvat: error: ...``, with exit code 2 for usage errors (bad
options, unknown names, missing files) and 1 for failures; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torchvat
from torchvat._extras import MissingExtraError, require
from torchvat.cli import compare, demo, env, evaluate, train, visualize
from torchvat.cli._common import ArgumentParser
from torchvat.train import CollapseWarning

__all__ = ["CLI_EXTRA_MODULES", "build_parser", "check_cli_extra", "main"]

#: the modules of the ``[cli]`` extra the command needs (progress bar, image folders, datasets, figures),
#: each after those it imports (matplotlib imports PIL)
CLI_EXTRA_MODULES = ("tqdm", "PIL", "sklearn", "matplotlib")

_USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, NotADirectoryError, IsADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand.

    Returns:
        The parser.

    Example:
        >>> build_parser().parse_args(["env"]).command.__name__
        'env_command'
    """
    parser = ArgumentParser(
        prog="torchvat",
        description="Virtual adversarial training, adversarial training and entropy minimization for PyTorch.",
        epilog="Start with `torchvat demo`; `torchvat SUBCOMMAND --help` lists a subcommand's options.",
    )
    parser.add_argument("--version", action="version", version=f"torchvat {torchvat.__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show the full traceback on errors")
    subparsers = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND", parser_class=ArgumentParser)
    for module in (demo, train, compare, evaluate, visualize, env):
        module.add_parser(subparsers)
    return parser


def check_cli_extra() -> None:
    """Check that the ``[cli]`` extra's packages are importable, before a subcommand starts.

    Raises:
        MissingExtraError: Naming the first missing package and ``pip install 'torchvat[cli]'``.

    Example:
        >>> check_cli_extra()
    """
    for module in CLI_EXTRA_MODULES:
        require(module, extra="cli", feature="the torchvat command")


def _show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    sys.stderr.write(f"torchvat: warning: {message}\n")


class _PrefixFormatter(logging.Formatter):
    """``torchvat: message``, without doubling the prefix of the library's own messages."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text if text.startswith("torchvat:") else f"torchvat: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for usage errors, 1 for other failures.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    if getattr(args, "command", None) is None:
        parser.print_help()
        return 0
    debug = bool(getattr(args, "debug", False))
    if args.command is not env.env_command:  # env reports what is installed, extras or not
        try:
            check_cli_extra()
        except ModuleNotFoundError as err:  # MissingExtraError, or a missing dependency of an installed package
            if debug:
                raise
            text = str(err) if isinstance(err, MissingExtraError) else f"{err} (pip install 'torchvat[cli]')"
            sys.stderr.write(f"torchvat: error: {_one_line(text)}\n")
            return 1
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: only when nothing configured logging before
        handler = logging.StreamHandler()
        handler.setFormatter(_PrefixFormatter())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _show_warning
            if logging.getLogger("torchvat.train.trainer").isEnabledFor(logging.WARNING):
                # the trainer logs each CollapseWarning it issues: shown once, as its log line
                warnings.simplefilter("ignore", CollapseWarning)
        try:
            return int(args.command(args))
        except KeyboardInterrupt:
            sys.stderr.write("torchvat: interrupted\n")
            return 130
        except _USAGE_ERRORS as err:
            if debug:
                raise
            text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
            sys.stderr.write(f"torchvat: error: {_one_line(text)}\n")
            return 2
        except Exception as err:
            if debug:
                raise
            sys.stderr.write(
                f"torchvat: error: {type(err).__name__}: {_one_line(str(err))} (run with --debug for the traceback)\n"
            )
            return 1


def _one_line(text: str) -> str:
    return " ".join(text.split())
