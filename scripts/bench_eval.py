"""Benchmark the anomaly metrics against their peers, each measured in this same run.

For the same stream of synthetic per-pixel scores (StreetHazards-sized images, a few percent
anomaly pixels) it prints, per method: wall time of update+compute, pixels/s, peak extra memory
(each method runs in its own process, so peaks do not mix; only the metric's own calls are
timed, not the making of the scores) and |AUPR - exact| and |FPR95 - exact|,
where "exact" is scikit-learn's average precision and the official anomaly-seg FPR95 routine on
all pixels at once. Then: the state size of our metric after 50 and after 500 images, and the
wall time of a full evaluation (4 scores + mIoU; pooled, pooled + per-image, and with every kit's
convention on top) divided by the model's forward time alone, for a MobileNetV2 and a ResNet-101
DeepLabv3+: each round runs the forward alone and every evaluation back to back, and the ratio
printed is the median over rounds (this machine's speed drifts over minutes; a round's runs share it).

    python scripts/bench_eval.py                 # ~1e7 pixels, a few minutes on 2 cores
    python scripts/bench_eval.py --images 4      # quicker
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.config import CONVENTIONS  # noqa: E402
from lib.registry import REGISTRY  # noqa: E402

STREETHAZARDS_LABELS = REGISTRY["streethazards"].label_args

METHODS = ("ours", "torchmetrics-exact", "torchmetrics-binned", "sklearn")


def make_image(index: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and labels of one image, regenerated from its index (nothing is kept around)."""
    g = torch.Generator().manual_seed(index)
    labels = torch.zeros(height, width, dtype=torch.bool)
    # A few rectangular "objects" as anomalies, ~3% of the pixels.
    for _ in range(3):
        h, w = int(height * 0.1), int(width * 0.1)
        y = int(torch.randint(0, height - h, (1,), generator=g))
        x = int(torch.randint(0, width - w, (1,), generator=g))
        labels[y : y + h, x : x + w] = True
    scores = torch.randn(height, width, generator=g) + 1.5 * labels
    return scores, labels


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fpr95_official(scores: np.ndarray, labels: np.ndarray) -> float:
    """FPR at 95% TPR as the official anomaly-seg code computes it (closest recall to 0.95)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], labels[order].astype(np.int64)
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[idx]
    fps = 1 + idx - tps
    recall = tps / tps[-1]
    last = tps.searchsorted(tps[-1])
    sl = slice(last, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    return float(fps[np.argmin(np.abs(recall - 0.95))] / (labels.size - labels.sum()))


def run_method(method: str, images: int, height: int, width: int, queue) -> None:
    """Stream the images through one method; only the metric's own calls are timed."""
    torch.set_num_threads(2)
    make_image(0, height, width)  # warm the generator path before the baseline
    base = peak_rss_mib()
    seconds = 0.0

    def timed(fn, *args):
        nonlocal seconds
        start = time.perf_counter()
        out = fn(*args)
        seconds += time.perf_counter() - start
        return out

    fpr = float("nan")
    if method == "ours":
        from lib.metrics import AnomalyMetric

        metric = AnomalyMetric()
        for i in range(images):
            timed(metric.update, *make_image(i, height, width))
        out = timed(metric.compute)
        aupr, fpr = out["AUPR"], out["FPR95"]
    elif method.startswith("torchmetrics"):
        from torchmetrics.classification import BinaryAveragePrecision

        metric = BinaryAveragePrecision(thresholds=None if method.endswith("exact") else 1600)
        for i in range(images):
            s, y = make_image(i, height, width)
            timed(metric.update, s.flatten(), y.flatten().long())
        aupr = float(timed(metric.compute))
    else:
        from sklearn.metrics import average_precision_score

        parts = [make_image(i, height, width) for i in range(images)]
        s = timed(lambda: torch.cat([p[0].flatten() for p in parts]).numpy())
        y = timed(lambda: torch.cat([p[1].flatten() for p in parts]).numpy())
        del parts
        aupr = float(timed(average_precision_score, y, s))
        fpr = fpr95_official(s, y)  # the reference FPR95, not timed
    queue.put(
        {"method": method, "seconds": seconds, "mib": peak_rss_mib() - base, "AUPR": aupr, "FPR95": fpr}
    )


def measure(method: str, images: int, height: int, width: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_method, args=(method, images, height, width, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def state_growth(height: int, width: int) -> tuple[int, int]:
    from lib.metrics import AnomalyMetric

    metric = AnomalyMetric()
    sizes = []
    for i in range(500):
        s, y = make_image(i % 7, height // 8, width // 8)
        metric.update(s, y)
        if i + 1 in (50, 500):
            sizes.append(sum(t.numel() * t.element_size() for t in metric.state_tensors.values()))
    return sizes[0], sizes[1]


def evaluation_overhead(
    images: int, height: int, width: int, backbone: str, repeats: int
) -> dict[str, float]:
    """Seconds of the model's forward alone and of full evaluations (4 scores + mIoU) per protocol
    set, each the best of ``repeats`` runs taken in turn."""
    from lib.data import normalize
    from lib.test import evaluate
    from network import build_model

    torch.manual_seed(0)
    model = build_model(arch="deeplabv3plus", backbone=backbone, head="distance", num_classes=13).eval()
    batches = []
    for i in range(images):
        g = torch.Generator().manual_seed(i)
        image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=g)
        mask = torch.randint(0, 14, (1, height, width), generator=g)
        batches.append((image, mask))
    with torch.no_grad():
        model(normalize(batches[0][0]))  # warm-up

    def forward_only():
        with torch.no_grad():
            for image, _ in batches:
                model(normalize(image))

    runs = {
        "forward alone": forward_only,
        "pooled": lambda: evaluate(
            model,
            batches,
            num_classes=13,
            **STREETHAZARDS_LABELS,
            device="cpu",
            protocols=("pooled",),
            progress=False,
        ),
        "pooled + per-image": lambda: evaluate(
            model, batches, num_classes=13, **STREETHAZARDS_LABELS, device="cpu", progress=False
        ),
        # Every kit's convention on top: anomaly-seg (per image, every pixel), smiyc (its pooled
        # curve, and the component metrics of all 4 scores: a temporary file and a second pass),
        # pytorch-ood (per image, sharing the per-image state).
        "pooled + per-image + all conventions": lambda: evaluate(
            model,
            batches,
            num_classes=13,
            **STREETHAZARDS_LABELS,
            device="cpu",
            progress=False,
            conventions=CONVENTIONS,
        ),  # fmt: skip
    }
    for fn in runs.values():  # warm-up: first calls allocate and load what later ones reuse
        fn()
    rounds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # in turn, so that a round's runs see the same machine state
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            rounds[name].append(time.perf_counter() - start)
    return rounds


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--images", type=int, default=12, help="images streamed per method (default: 12)")
    parser.add_argument("--height", type=int, default=720, help="image height in pixels (default: 720)")
    parser.add_argument("--width", type=int, default=1280, help="image width in pixels (default: 1280)")
    parser.add_argument(
        "--eval-images", type=int, default=4, help="images for the evaluation overhead (default: 4)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="rounds of the overhead measurement, each running the forward alone and every evaluation in "
        "turn; the ratio printed is the median over rounds of evaluation / forward (default: 5)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=METHODS[1:], help="peers to leave out")
    parser.add_argument(
        "--eval-backbones",
        nargs="+",
        default=["mobilenet_v2", "resnet101"],
        help="DeepLabv3+ backbones of the evaluation-overhead measurement: the lightest model (the hardest "
        "case: least forward time to hide the metrics behind) and the reference project's (default: both)",
    )
    args = parser.parse_args()
    pixels = args.images * args.height * args.width
    print(f"{pixels / 1e6:.1f} M pixels ({args.images} images of {args.height}x{args.width}), one score\n")
    results = {m: measure(m, args.images, args.height, args.width) for m in METHODS if m not in args.skip}
    exact = results.get("sklearn")
    print(
        f"{'method':<22}{'seconds':>9}{'Mpx/s':>8}{'peak MiB':>10}{'AUPR':>9}{'|dAUPR|':>9}{'|dFPR95|':>10}"
    )
    for name, r in results.items():
        d_aupr = abs(r["AUPR"] - exact["AUPR"]) if exact else float("nan")
        d_fpr = abs(r["FPR95"] - exact["FPR95"]) if exact else float("nan")
        print(
            f"{name:<22}{r['seconds']:9.2f}{pixels / r['seconds'] / 1e6:8.1f}{r['mib']:10.0f}"
            f"{r['AUPR']:9.4f}{d_aupr:9.1e}{d_fpr:10.1e}"
        )
    ours = results["ours"]["seconds"]
    for peer in ("torchmetrics-exact", "torchmetrics-binned", "sklearn"):
        if peer in results:
            print(f"speed-up of ours over {peer}: {results[peer]['seconds'] / ours:.1f}x")
    small, large = state_growth(args.height, args.width)
    print(f"\nour state after 50 images: {small / 2**20:.1f} MiB, after 500 images: {large / 2**20:.1f} MiB")
    h, w = args.height // 2, args.width // 2
    for backbone in args.eval_backbones:
        rounds = evaluation_overhead(args.eval_images, h, w, backbone, args.repeats)
        forward = np.array(rounds.pop("forward alone"))
        print(
            f"\nDeepLabv3+ {backbone}, forward alone, {args.eval_images} images of {h}x{w}: "
            f"{forward.min():.2f} s (best of {forward.size})"
        )
        for name, seconds in rounds.items():
            # The ratio of each round's two runs, back to back, then the median over rounds: this
            # machine's speed drifts by 10-20 % over minutes, which ratios of best times do not cancel.
            ratios = np.array(seconds) / forward
            print(
                f"full evaluation (4 scores + mIoU), {name}: {min(seconds):.2f} s (best) = "
                f"{np.median(ratios):.2f}x the forward (median of {ratios.size} rounds; "
                f"range {ratios.min():.2f}-{ratios.max():.2f}x, ratio of best times {min(seconds) / forward.min():.2f}x)"
            )


if __name__ == "__main__":
    main()
