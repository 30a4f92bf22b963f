"""Regenerate the golden model outputs of tests/test_network.py, or check them and the VainF key lists.

Examples:
    python scripts/make_golden.py                  # print the GOLDEN dict to paste into tests/test_network.py
    python scripts/make_golden.py --check          # compare with that GOLDEN, verify the key lists
    python scripts/make_golden.py --check --models my_fcn/plain/eval --no-keys

GOLDEN (test_seeded_output_is_stable): for each model below, [mean, std, mean over classes at pixel
(10, 20), max of class 5] of the logits of the standard-head, 13-class model built after
torch.manual_seed(0), on torch.randn(B, 3, 64, 64) from a generator seeded with 0 (CPU, float32; B = 1
in eval mode, 2 in train mode, where BatchNorm uses batch statistics - DeepLab's untrained eval-mode
features would leave little more than the head's bias). Regenerate it only when a change of the
models is meant to change their outputs, and say so in the commit.

Key lists (tests/fixtures/*.keys.txt, see tests/fixtures/README.md): the state-dict keys and shapes
of VainF's published checkpoints. They are the reference the models are tested against, so this
script never writes them: --check only verifies that our 19-class OS16 models have exactly those
keys and shapes, in that order (and, with --reference-dir, that the files equal the reference copies).

Exit status: 0 when every check passes (or after printing), 1 when one fails.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.cli import script_parser  # noqa: E402
from network import build_model  # noqa: E402

#: (arch, backbone, train mode) of each golden model, in GOLDEN's order.
MODELS: tuple[tuple[str, str, bool], ...] = (
    ("deeplabv3plus", "mobilenet_v2", False),
    ("deeplabv3plus", "mobilenet_v2", True),
    ("deeplabv3", "mobilenet_v2", True),
    ("unet", "resnet34", False),
    ("unet", "plain", False),
    ("my_fcn", "plain", False),
)
#: backbone -> key list of VainF's 19-class OS16 DeepLabv3+ checkpoint (in tests/fixtures).
KEYS_FILES = {
    "mobilenet_v2": "deeplabv3plus_mobilenet_os16_19classes.keys.txt",
    "resnet50": "deeplabv3plus_resnet50_os16_19classes.keys.txt",
    "resnet101": "deeplabv3plus_resnet101_os16_19classes.keys.txt",
}
GOLDEN_FILE = ROOT / "tests" / "test_network.py"
FIXTURES = ROOT / "tests" / "fixtures"


# ============================================================================== golden outputs


def golden_summary(*, arch: str, backbone: str, train: bool) -> torch.Tensor:
    """The four numbers GOLDEN records for one model (see the module docstring for the recipe).

    Returns:
        float32 [mean, std, mean over classes at pixel (10, 20), max of class 5] of the logits.
        Shape (4,).
    """
    torch.manual_seed(0)
    model = build_model(arch=arch, backbone=backbone, head="standard", num_classes=13).train(train)
    x = torch.randn(2 if train else 1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    return torch.stack([logits.mean(), logits.std(), logits[0, :, 10, 20].mean(), logits[0, 5].max()])


def assert_matches_golden(summary: torch.Tensor, golden: Sequence[float]) -> None:
    """Raise AssertionError (naming the entries) unless ``summary`` matches ``golden``.

    The mean over classes at one pixel is a sum that nearly cancels: CPU kernels that add in another
    order (oneDNN picks them by instruction set) move it by ~1e-5 of the logits' spread, hence the
    absolute tolerance relative to the std (entry 1).
    """
    expected = torch.tensor(list(golden), dtype=torch.float32)
    torch.testing.assert_close(summary, expected, rtol=1e-3, atol=2e-5 * float(expected[1]))


def read_golden(path: Path) -> dict[tuple[str, str, bool], list[float]]:
    """The ``GOLDEN = {...}`` literal of a test file, read without importing it.

    Raises:
        ValueError: the file has no module-level ``GOLDEN`` literal.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "GOLDEN" for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    raise ValueError(
        f"{path} has no module-level GOLDEN = {{...}} literal; pass the test file with --golden-file"
    )


def golden_literal(values: dict[tuple[str, str, bool], list[float]]) -> str:
    """``GOLDEN = {...}`` as it is written in tests/test_network.py (6 significant digits)."""
    lines = ["GOLDEN = {"]
    for (arch, backbone, train), numbers in values.items():
        shown = ", ".join(f"{v:.6g}" for v in numbers)
        lines.append(f'    ("{arch}", "{backbone}", {train}): [{shown}],')
    return "\n".join([*lines, "}"])


def check_golden(models: Sequence[tuple[str, str, bool]], golden_file: Path) -> list[str]:
    """Compare each model's summary with the file's GOLDEN; print a line each, return the failures."""
    golden = read_golden(golden_file)
    failures = []
    if list(models) == list(MODELS) and set(golden) != set(MODELS):
        failures.append(f"GOLDEN's models {sorted(golden)} are not this script's MODELS {sorted(MODELS)}")
        print(f"FAIL golden models: {failures[-1]}")
    for arch, backbone, train in models:
        name = f"{arch}/{backbone}/{'train' if train else 'eval'}"
        if (arch, backbone, train) not in golden:
            failures.append(f"{name}: not in GOLDEN of {golden_file}")
            print(f"FAIL golden {failures[-1]}")
            continue
        summary = golden_summary(arch=arch, backbone=backbone, train=train)
        try:
            assert_matches_golden(summary, golden[arch, backbone, train])
        except AssertionError as err:
            failures.append(f"{name}: {str(err).strip().splitlines()[0]} (got {summary.tolist()})")
            print(f"FAIL golden {failures[-1]}")
            continue
        print(f"PASS golden {name}: {[float(f'{v:.6g}') for v in summary.tolist()]}")
    return failures


# ============================================================================== VainF key lists


def read_keys(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of a key list, in file order: one ``key AxBxC`` line per tensor ("scalar": 0-dim).

    Raises:
        ValueError: a line is not ``key shape``.
    """
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(
                f"{path}:{number}: expected 'key shape' (e.g. 'conv.weight 32x3x3x3'), got {line!r}"
            )
        key, shape = fields
        pairs.append((key, () if shape == "scalar" else tuple(int(n) for n in shape.split("x"))))
    return pairs


def check_keys(fixtures: Path, reference_dir: Path | None) -> list[str]:
    """Verify our 19-class OS16 DeepLabv3+ state dicts against the key lists (never rewrite them)."""
    failures = []
    for backbone, file_name in KEYS_FILES.items():
        path = fixtures / file_name
        if reference_dir is not None and (reference_dir / file_name).read_bytes() != path.read_bytes():
            failures.append(f"{path} differs from the reference copy {reference_dir / file_name}")
            print(f"FAIL keys {failures[-1]}")
            continue
        expected = read_keys(path)
        model = build_model(backbone=backbone, head="standard", num_classes=19, output_stride=16)
        got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        if got != expected:
            missing = [k for k in dict(expected) if k not in dict(got)]
            extra = [k for k in dict(got) if k not in dict(expected)]
            shapes = [k for k, s in expected if k in dict(got) and dict(got)[k] != s]
            detail = f"not in our model {missing[:3]}, not in the list {extra[:3]}, other shapes {shapes[:3]}"
            if not (missing or extra or shapes):
                detail = "same keys and shapes in another order"
            failures.append(f"deeplabv3plus/{backbone} does not match {file_name}: {detail}")
            print(f"FAIL keys {failures[-1]}")
            continue
        print(f"PASS keys deeplabv3plus/{backbone}: {len(got)} tensors as in {file_name}")
    return failures


# ============================================================================== command line


def parse_model(text: str) -> tuple[str, str, bool]:
    """``ARCH/BACKBONE/MODE`` (mode: eval or train) -> (arch, backbone, train)."""
    parts = text.split("/")
    if len(parts) != 3 or parts[2] not in ("eval", "train"):
        raise argparse.ArgumentTypeError(f"expected ARCH/BACKBONE/eval or ARCH/BACKBONE/train, got {text!r}")
    return parts[0], parts[1], parts[2] == "train"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--check", action="store_true",
                        help="compare with GOLDEN in --golden-file and verify the key lists instead of printing")  # fmt: skip
    parser.add_argument("--models", nargs="+", type=parse_model, default=list(MODELS), metavar="ARCH/BACKBONE/MODE",
                        help="models to compute, e.g. my_fcn/plain/eval (default: all of GOLDEN's)")  # fmt: skip
    parser.add_argument("--no-keys", action="store_true", help="with --check: skip the key lists")
    parser.add_argument("--golden-file", type=Path, default=GOLDEN_FILE,
                        help="test file holding GOLDEN (default: tests/test_network.py)")  # fmt: skip
    parser.add_argument("--fixtures", type=Path, default=FIXTURES,
                        help="folder of the *.keys.txt lists (default: tests/fixtures)")  # fmt: skip
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="with --check: folder of the reference copies of the key lists (e.g. "
                        "shared/reference/checkpoints); the fixtures must equal them byte for byte")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.check:
        values = {m: golden_summary(arch=m[0], backbone=m[1], train=m[2]).tolist() for m in args.models}
        print(f"# torch {torch.__version__}, CPU, {torch.get_num_threads()} threads", file=sys.stderr)
        print(golden_literal(values))
        return 0
    failures = check_golden(args.models, args.golden_file)
    if not args.no_keys:
        failures += check_keys(args.fixtures, args.reference_dir)
    print(f"make_golden: {len(failures)} check(s) failed" if failures else "make_golden: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
