"""Train DeepLabv3+ and evaluate segmentation + anomaly detection in one run.

Examples:
    python scripts/main.py                                  # the demo on synthetic data
    python scripts/main.py --preset tiny                    # a few seconds, smoke test
    python scripts/main.py --preset streethazards --data-root data/streethazards --device cuda
    python scripts/main.py --head standard --loss ce --epochs 20

Every flag below is a field of lib.config.RunConfig; flags override the preset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import add_config_arguments, config_from_args, presets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(presets()),
        default="demo",
        help="starting settings: demo (synthetic, ~5 min on 2 CPU cores), tiny (seconds), "
        "streethazards (the real dataset, GPU) (default: demo)",
    )
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args, base=presets()[args.preset])
    print(f"preset {args.preset}:\n{cfg.to_json()}")
    from lib.data import DatasetError
    from lib.experiment import run

    try:
        run(cfg)
    except DatasetError as err:
        print(f"\ndataset error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
