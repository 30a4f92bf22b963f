"""Small helpers shared by the command lines in ``scripts/`` (kept free of heavy imports so that
``--help`` answers at once)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


class _OneLineErrors(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line - the flag, the value and the valid ones, as
    argparse words them - instead of the full usage (dozens of lines for the run flags)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help explains every flag)\n")


def script_parser(doc: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose help shows a script's docstring: the first line as the description,
    the rest (examples, notes) verbatim after the flags. Usage errors are one line (exit code 2)."""
    first, _, rest = doc.partition("\n")
    return _OneLineErrors(
        description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )


class UsageError(Exception):
    """A command line that cannot run as given (the message says why and what to change)."""


def run_config(args: argparse.Namespace, *, preset: str) -> tuple[dict[str, Any] | None, Any]:
    """(checkpoint, RunConfig) of a training command: the preset with the flags given or, with
    ``args.resume``, the checkpoint's own config with the runtime flags given.

    Raises:
        UsageError: a flag conflicts with the checkpoint, a value is invalid, or the --resume file is
            missing or not a training checkpoint.
    """
    from lib.checkpoint import latest_run, load_checkpoint
    from lib.config import config_from_args, config_with_overrides, given_fields, presets

    try:
        if not getattr(args, "resume", None):
            return None, config_from_args(args, base=presets()[preset])
        if args.resume == "latest":
            args.resume = latest_run(args.out_dir or presets()[preset].get("out_dir", "ckpts"))
        checkpoint = load_checkpoint(args.resume)
        purpose = f"--resume {checkpoint['path']}"
        return checkpoint, config_with_overrides(checkpoint["config"], given_fields(args), purpose=purpose)
    except (ValueError, FileNotFoundError) as err:  # the user's flags and paths
        raise UsageError(str(err)) from err


def run_reporting_errors(body: Callable[[], int]) -> int:
    """Run a command's body; a usage error, a dataset, download or weights-file problem (messages that
    name the fix) end it with that message and exit code 2 instead of a traceback. Anything else -
    an internal error, a FileNotFoundError raised inside a run included - keeps its traceback: the
    paths a user gives are checked where they are read (`run_config`, `UsageError`). The process
    group of a torchrun launch is shut down either way."""
    from lib import distributed
    from lib.data import DatasetError
    from lib.download import DownloadError
    from lib.weights import WeightsError

    try:
        return body()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
    except DatasetError as err:
        print(f"\ndataset error: {err}", file=sys.stderr)
    except (WeightsError, DownloadError) as err:
        print(f"\nerror: {err}", file=sys.stderr)
    finally:
        distributed.cleanup()
    return 2
