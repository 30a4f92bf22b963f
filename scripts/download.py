"""Download datasets and weights (resumable, checksummed); see lib/download.py for the details.

Examples:
    python scripts/download.py streethazards                       # into data/streethazards
    python scripts/download.py streethazards --root /content/sh --parts test --keep-tars
    python scripts/download.py weights streethazards-reference     # a known file, into ckpts/pretrained
    python scripts/download.py weights --list                      # the known files (lib/weights.py)
    python scripts/download.py gdrive FILE_ID ckpts/pretrained/best_deeplabv3plus_resnet101_cityscapes_os16.pth

Cityscapes needs a login: pip install cityscapesscripts, then
    csDownload -d data/cityscapes gtFine_trainvaltest.zip leftImg8bit_trainvaltest.zip
and unzip both archives in data/cityscapes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.download import (  # noqa: E402
    STREETHAZARDS_BASE_URL,
    STREETHAZARDS_COUNTS,
    DownloadError,
    download_gdrive,
    download_streethazards,
)
from lib.weights import WEIGHTS, WeightsError, fetch_weights  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    sh = sub.add_parser(
        "streethazards", help="StreetHazards tars: download, MD5 check, extract, count images"
    )
    sh.add_argument(
        "--root", default="data/streethazards", help="target folder (default: data/streethazards)"
    )
    sh.add_argument("--parts", nargs="+", choices=("train", "test"), default=["train", "test"])
    sh.add_argument("--base-url", default=STREETHAZARDS_BASE_URL, help="where the tars are (a mirror)")
    sh.add_argument("--keep-tars", action="store_true", help="keep the tars after extraction")
    sh.add_argument(
        "--no-count-check", action="store_true", help="do not compare image counts with the release"
    )
    wt = sub.add_parser("weights", help="known pretrained weights by name (lib/weights.py), resumable")
    wt.add_argument("names", nargs="*", help="names of lib.weights.WEIGHTS (see --list)")
    wt.add_argument("--dir", default="ckpts/pretrained", help="cache folder (default: ckpts/pretrained)")
    wt.add_argument("--list", action="store_true", help="print the known files and exit")
    gd = sub.add_parser("gdrive", help="one Google-Drive file via gdown (e.g. pretrained weights)")
    gd.add_argument("file_id")
    gd.add_argument("output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.what == "streethazards":
            counts = download_streethazards(
                args.root,
                parts=args.parts,
                base_url=args.base_url,
                keep_tars=args.keep_tars,
                expected_counts=None if args.no_count_check else STREETHAZARDS_COUNTS,
            )
            print(f"done: {', '.join(f'{k} {v}' for k, v in counts.items())} images under {args.root}")
        elif args.what == "weights":
            return _weights(args)
        else:
            print(f"done: {download_gdrive(args.file_id, args.output)}")
    except (DownloadError, WeightsError) as err:
        print(f"\ndownload error: {err}", file=sys.stderr)
        return 2
    return 0


def _weights(args: argparse.Namespace) -> int:
    if args.list or not args.names:
        for entry in WEIGHTS.values():
            print(f"{entry.name:<48} {entry.backbone:<13} {entry.head:<9} {entry.num_classes:>3} classes  "
                  f"{entry.trained_on:<14} {entry.source}")  # fmt: skip
        return 0
    for name in args.names:
        print(f"done: {fetch_weights(name, cache_dir=args.dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
