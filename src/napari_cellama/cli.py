"""``napari-cellama`` command line.

Every subcommand lives in its own module under ``napari_cellama._cli`` and exposes
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``. Bad input ends
with one line on stderr and exit status 2; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

SUBCOMMANDS = ("transfer", "demo", "gui", "niche", "finetune", "prototypes", "cache", "replay")
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-cellama",
        description="CELLama cell-sentence annotation of Xenium runs (the napari plugin's engine).",
    )
    parser.add_argument("--version", action="version", version=f"napari-cellama {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"napari_cellama._cli.{name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _quiet_libraries() -> None:
    """No download/loading progress bars from huggingface / transformers on stderr."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        return
    hf_logging.disable_progress_bar()


def _one_line_warnings() -> None:
    """napari-cellama's own warnings (damaged cache, relabelled reference) as one line on stderr."""
    import warnings

    from .core.cache import CacheWarning
    from .io.readers import LabelWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (CacheWarning, LabelWarning)):
            print(f"napari-cellama: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    from .atomic import Terminated, cleanup_temporaries, install_signal_handlers, restore_signal_handlers
    from .validators import CellamaInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("transfer", "demo", "niche", "finetune", "prototypes", "replay"):
        _quiet_libraries()
    # SIGTERM / SIGHUP unwind like Ctrl-C: every temporary output is removed, old outputs stay
    # (not for the GUI: inside Qt's event loop Python handlers run late, a SIGTERM must still end it)
    previous = install_signal_handlers() if args.command != "gui" else {}
    _one_line_warnings()
    try:
        args._run(args)
    except CellamaInputError as err:
        if args.debug:
            raise
        print(f"napari-cellama: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated as err:
        print(f"napari-cellama: terminated (signal {err.signum})", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("napari-cellama: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line for the user, --debug for the traceback
        if args.debug:
            raise
        print(f"napari-cellama: failed: {type(err).__name__}: {err} (rerun with --debug for details)",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        cleanup_temporaries()
        restore_signal_handlers(previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
