"""Small helpers shared by the command lines in ``scripts/`` (kept free of heavy imports so that
``--help`` answers at once)."""

from __future__ import annotations

import argparse


def script_parser(doc: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose help shows a script's docstring: the first line as the description,
    the rest (examples, notes) verbatim after the flags."""
    first, _, rest = doc.partition("\n")
    return argparse.ArgumentParser(
        description=first, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
