"""Input-pipeline throughput: our StreetHazards loader against the seed's, on the same PNGs.

Both pipelines read the same 1280x720 image/annotation pairs, take a random 512x512 crop and a
random horizontal flip, and batch them with a DataLoader (same batch size, same workers):

- ours: `lib.datasets.StreetHazards` + `train_transforms((512, 512))` + `make_loader`: OpenCV decodes
  straight to RGB, transforms v2 run on uint8 tensors, the mask is widened to int64 after the
  crop, and the uint8 batch is normalised later on the GPU (`lib.data.normalize`).
- seed: PIL open + convert("RGB"), random crop 512, flip, ToTensor, Normalize per image (float32
  batches leave the workers), the mask via numpy int64 minus 1.

Prints images/s per pipeline and worker count, and the ratio ours / seed. Example:

    python scripts/bench_data.py                       # 60 synthetic 1280x720 PNGs, 1 and 2 workers
    python scripts/bench_data.py --workers 0 1 2 4 --epochs 4
    python scripts/bench_data.py --opencv-only            # our pipeline without the pyspng decoder
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms as T
from torchvision.transforms import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.cli import script_parser  # noqa: E402
from lib.data import IMAGENET_MEAN, IMAGENET_STD, make_loader, train_transforms  # noqa: E402
from lib.datasets import StreetHazards  # noqa: E402


class SeedStreetHazards(Dataset):
    """The seed project's pipeline, rebuilt: PIL decode, crop + flip on PIL images, ToTensor, Normalize."""

    def __init__(self, samples, crop: int) -> None:
        self.samples = samples
        self.crop = crop
        self.to_tensor = T.ToTensor()
        self.normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = Image.open(sample.image).convert("RGB")
        mask = Image.open(sample.annotation)
        i, j, h, w = T.RandomCrop.get_params(image, (self.crop, self.crop))
        image, mask = TF.crop(image, i, j, h, w), TF.crop(mask, i, j, h, w)
        if random.random() < 0.5:
            image, mask = TF.hflip(image), TF.hflip(mask)
        image = self.normalize(self.to_tensor(image))
        mask = torch.from_numpy(np.array(mask, dtype=np.int64)) - 1
        return image, mask


def images_per_second(loader: DataLoader, epochs: int) -> float:
    """Throughput over `epochs` full passes, after one untimed pass (worker start-up, page cache)."""
    for _ in loader:
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def cpu_ms_per_image(dataset: Dataset, batch_size: int, repeats: int) -> float:
    """CPU time per image of decode + augment + collate in this thread (insensitive to other load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for b in range(0, len(dataset), batch_size):
            default_collate([dataset[i] for i in range(b, min(b + batch_size, len(dataset)))])
        best = min(best, (time.thread_time() - start) / len(dataset) * 1000)
    torch.set_num_threads(threads)
    return best


def seed_loader(dataset: Dataset, *, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--root", default="data/bench_streethazards", help="dataset folder (generated if absent)"
    )
    parser.add_argument("--n", type=int, default=60, help="training images to generate")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="timed passes per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting (median reported)")
    parser.add_argument(
        "--opencv-only", action="store_true", help="decode our PNGs with OpenCV even if pyspng is there"
    )
    args = parser.parse_args(argv)

    root = Path(args.root)
    from lib.synthetic import generate_streethazards

    generate_streethazards(root, n_train=args.n, n_val=1, n_test=1, height=720, width=1280)
    ours = StreetHazards(root, "train", transforms=train_transforms((args.crop, args.crop)))
    seed = SeedStreetHazards(ours.samples, args.crop)
    import lib.data

    if args.opencv_only:
        lib.data._pyspng = None  # forked workers inherit it
    decoder = "pyspng" if lib.data._pyspng is not None else "OpenCV"
    print(
        f"{len(ours)} images 1280x720 PNG, crop {args.crop}, batch {args.batch_size}, "
        f"{args.epochs} timed epochs x {args.repeats} repeats (median); our PNG decoder: {decoder}"
    )
    ours_cpu = cpu_ms_per_image(ours, args.batch_size, args.repeats)
    seed_cpu = cpu_ms_per_image(seed, args.batch_size, args.repeats)
    print(
        f"CPU per image, one thread (decode + crop/flip + collate): ours {ours_cpu:.1f} ms, "
        f"seed {seed_cpu:.1f} ms, ratio {seed_cpu / ours_cpu:.2f}x"
    )
    print(f"{'workers':>7}  {'ours img/s':>10}  {'seed img/s':>10}  {'ratio':>6}")
    for workers in args.workers:
        loaders = {
            "ours": make_loader(ours, batch_size=args.batch_size, shuffle=True, num_workers=workers, seed=0),
            "seed": seed_loader(seed, batch_size=args.batch_size, num_workers=workers, seed=0),
        }
        rates: dict[str, list[float]] = {"ours": [], "seed": []}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
            for name, loader in loaders.items():
                rates[name].append(images_per_second(loader, args.epochs))
        ours_rate, seed_rate = (statistics.median(rates[k]) for k in ("ours", "seed"))
        print(f"{workers:>7}  {ours_rate:>10.1f}  {seed_rate:>10.1f}  {ours_rate / seed_rate:>5.2f}x")
        del loaders
    return 0


if __name__ == "__main__":
    sys.exit(main())
