import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from lib.data import (
    STREETHAZARDS_SPLITS,
    DatasetError,
    LabelEncoding,
    StreetHazards,
    StreetHazardsSplit,
    class_pixel_counts,
    class_statistics,
    find_samples,
    inverse_frequency_weights,
    make_loader,
    median_frequency_weights,
    normalize,
    read_odgt,
    train_transforms,
    validate_split,
)
from lib.figures import plot_class_distribution
from tests.conftest import write_split


def test_round_trip_values_and_types(tmp_path):
    ((image_path, annotation_path),) = write_split(tmp_path, "test", 1)
    ds = StreetHazards(tmp_path, "test")
    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 16, 24)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    expected_rgb = cv2.imread(str(image_path))[:, :, ::-1]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected_rgb)
    raw = cv2.imread(str(annotation_path), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask.numpy(), raw.astype(np.int64) - 1)
    assert mask.max() <= 13 and mask.min() >= 0


def test_raw_zero_becomes_ignore(tmp_path):
    ((_, annotation_path),) = write_split(tmp_path, "train", 1)
    raw = cv2.imread(str(annotation_path), cv2.IMREAD_UNCHANGED)
    raw[0, 0] = 0
    cv2.imwrite(str(annotation_path), raw)
    _, mask = StreetHazards(tmp_path, "train")[0]
    assert mask[0, 0] == 255


def test_odgt_both_styles_and_folder_discovery(tmp_path):
    write_split(tmp_path, "val", 3)
    odgt = tmp_path / STREETHAZARDS_SPLITS["val"].odgt
    array_style = find_samples(tmp_path, "val")
    records = read_odgt(odgt)
    odgt.write_text("\n".join(json.dumps(r) for r in records) + "\n")  # one object per line
    assert find_samples(tmp_path, "val") == array_style
    odgt.unlink()  # no index: the folders are searched
    assert sorted(find_samples(tmp_path, "val"), key=str) == sorted(array_style, key=str)


def test_the_layout_is_the_release_layout():
    """The one layout definition, spelled out: the loader, the synthetic generator, the download
    counts and the test fixtures all use it, so a slip here would pass their tests unnoticed."""
    assert STREETHAZARDS_SPLITS == {
        "train": StreetHazardsSplit(
            "train/images/training", "train/annotations/training", "train/training.odgt", "t1-3", "train"
        ),
        "val": StreetHazardsSplit(
            "train/images/validation", "train/annotations/validation", "train/validation.odgt", "t4", "train"
        ),
        "test": StreetHazardsSplit(
            "test/images/test", "test/annotations/test", "test/test.odgt", "t5", "test"
        ),
    }
    assert list(STREETHAZARDS_SPLITS) == ["train", "val", "test"] == list(StreetHazards.splits)
    test = STREETHAZARDS_SPLITS["test"]
    assert test.town_image_dir == "test/images/test/t5"
    assert test.town_annotation_dir == "test/annotations/test/t5"
    with pytest.raises(AttributeError):
        test.town = "t6"  # frozen: every module shares the one instance


@pytest.mark.parametrize("towns", [("t6",), ("t5-6",), ("t5", "t6")])
def test_test_folders_t5_t6(tmp_path, towns):
    """The real test split has t5 and t6 (t5-6 in some copies): every town folder is read."""
    for k, town in enumerate(towns):
        staging = tmp_path / f"staging{k}"
        write_split(staging, "test", 2, seed=k, odgt=False)
        for d in ("test/images/test", "test/annotations/test"):
            for f in (staging / d / "t5").iterdir():
                (tmp_path / d / town).mkdir(parents=True, exist_ok=True)
                f.rename(tmp_path / d / town / f"{k}{f.name}")
    ds = StreetHazards(tmp_path, "test")
    assert len(ds) == 2 * len(towns) and ds.validate() == 2 * len(towns)
    assert sorted({s.image.parent.name for s in ds.samples}) == sorted(towns)


def test_missing_root_names_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="synthetic"):
        StreetHazards(tmp_path / "nowhere", "train")


def test_wrong_root_suggests_the_right_one(tmp_path):
    write_split(tmp_path / "streethazards", "train", 1)
    with pytest.raises(DatasetError, match="did you mean data_root=.*streethazards"):
        StreetHazards(tmp_path, "train")


def test_image_without_annotation(tmp_path):
    ((_, annotation_path),) = write_split(tmp_path, "train", 1)
    annotation_path.unlink()
    with pytest.raises(DatasetError, match=f"{annotation_path.name}.*restore the annotation"):
        validate_split(tmp_path, "train")


def test_annotation_without_image(tmp_path):
    ((image_path, _),) = write_split(tmp_path, "train", 1, odgt=False)
    image_path.unlink()
    with pytest.raises(DatasetError, match="empty"):
        validate_split(tmp_path, "train")
    write_split(tmp_path, "train", 2, odgt=False)
    (tmp_path / STREETHAZARDS_SPLITS["train"].town_image_dir / "1.png").unlink()
    with pytest.raises(DatasetError, match="1.png has no image"):
        validate_split(tmp_path, "train")


def test_out_of_range_label(tmp_path):
    ((_, annotation_path),) = write_split(tmp_path, "train", 1)
    raw = cv2.imread(str(annotation_path), cv2.IMREAD_UNCHANGED)
    raw[2, 3] = 37
    cv2.imwrite(str(annotation_path), raw)
    with pytest.raises(DatasetError, match=f"{annotation_path}.*value 37.*1..14"):
        validate_split(tmp_path, "train")


def test_unreadable_png(tmp_path):
    ((image_path, _),) = write_split(tmp_path, "train", 1)
    image_path.write_bytes(image_path.read_bytes()[:40])  # truncated
    with pytest.raises(DatasetError, match=f"cannot decode image {image_path}.*re-extract"):
        validate_split(tmp_path, "train")


def test_rgb_annotation_rejected(tmp_path):
    ((_, annotation_path),) = write_split(tmp_path, "train", 1)
    cv2.imwrite(str(annotation_path), np.ones((16, 24, 3), np.uint8))
    with pytest.raises(DatasetError, match="3 channel.*single-channel"):
        validate_split(tmp_path, "train")


def test_size_mismatch(tmp_path):
    ((_, annotation_path),) = write_split(tmp_path, "train", 1)
    cv2.imwrite(str(annotation_path), np.ones((8, 8), np.uint8))
    with pytest.raises(DatasetError, match="same size"):
        validate_split(tmp_path, "train")


def test_odgt_listing_missing_image(tmp_path):
    ((image_path, _),) = write_split(tmp_path, "train", 1)
    image_path.rename(image_path.with_name("renamed.png"))
    with pytest.raises(DatasetError, match="do not exist"):
        find_samples(tmp_path, "train")


def test_unknown_split():
    with pytest.raises(DatasetError, match="train, val, test"):
        find_samples(".", "training")


def test_transform_keeps_image_and_mask_aligned():
    # Encode each pixel's position in both image and mask; after crop+flip they must still agree.
    h, w = 20, 30
    ids = torch.arange(h * w).reshape(h, w)
    image = tv_tensors.Image(torch.stack([ids % 256, ids // 256, torch.zeros_like(ids)]).to(torch.uint8))
    mask = tv_tensors.Mask(ids % 13)
    transform = train_transforms((12, 16))
    for seed in range(20):
        torch.manual_seed(seed)
        img_t, mask_t = transform(image, mask)
        decoded = img_t[0].long() + 256 * img_t[1].long()
        assert img_t.shape[-2:] == mask_t.shape[-2:] == (12, 16)
        assert torch.equal(decoded % 13, mask_t)


def test_padding_fills_mask_with_ignore_never_class_zero():
    image = tv_tensors.Image(torch.full((3, 8, 8), 7, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.full((8, 8), 5, dtype=torch.int64))
    img_t, mask_t = train_transforms((16, 16))(image, mask)
    assert set(mask_t.unique().tolist()) == {5, 255}
    assert (mask_t == 255).sum() == 16 * 16 - 64
    assert ((img_t[0] == 0) == (mask_t == 255)).all()


def test_normalize_imagenet():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32
    assert torch.allclose(
        out[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )


def test_loader_is_seeded(tiny_dataset):
    ds = StreetHazards(tiny_dataset, "train", transforms=train_transforms((8, 8)))

    def first_batch():
        return next(iter(make_loader(ds, batch_size=3, shuffle=True, num_workers=1, seed=4)))

    a, b = first_batch(), first_batch()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_class_counts_and_weights(tmp_path):
    write_split(tmp_path, "train", 2)
    ds = StreetHazards(tmp_path, "train")
    counts = class_pixel_counts(ds)
    assert counts.sum() == 2 * 16 * 24 and counts[13] == 0
    weights = inverse_frequency_weights(counts[:13])
    assert weights.shape == (13,)
    rare, common = counts[:13].argmin(), counts[:13].argmax()
    assert weights[rare] >= weights[common]
    assert torch.isclose(weights[counts[:13] > 0].mean(), torch.tensor(1.0))


def test_class_statistics_by_hand(tmp_path):
    # Two 2x2 annotations (raw = train id + 1, raw 0 = ignore):
    #   [[0, 0], [1, ignore]] and [[0, 2], [2, 2]]  ->  counts 3, 1, 3; labelled pixels 3 and 4.
    pairs = write_split(tmp_path, "train", 2, odgt=False)
    cv2.imwrite(str(pairs[0][1]), np.array([[1, 1], [2, 0]], np.uint8))
    cv2.imwrite(str(pairs[1][1]), np.array([[1, 3], [3, 3]], np.uint8))
    stats = class_statistics(StreetHazards(tmp_path, "train"), num_classes=3)
    assert stats.counts.tolist() == [3, 1, 3] and stats.ignored == 1 and stats.other == 0
    assert stats.images.tolist() == [2, 1, 1] and stats.num_images == 2
    assert stats.image_pixels.tolist() == [7, 3, 4]
    assert torch.allclose(stats.frequencies, torch.tensor([3 / 7, 1 / 7, 3 / 7], dtype=torch.float64))
    # median frequency: freq = counts / image_pixels = 3/7, 1/3, 3/4; median 3/7
    weights = median_frequency_weights(stats.counts, stats.image_pixels)
    assert torch.allclose(weights, torch.tensor([1.0, 9 / 7, 4 / 7]))
    # the plain-share variant, and an absent class gets weight 0 and stays out of the median
    weights = median_frequency_weights(torch.tensor([2, 0, 6, 4]))
    assert torch.allclose(weights, torch.tensor([2.0, 0.0, 2 / 3, 1.0]))
    assert class_pixel_counts(StreetHazards(tmp_path, "train")).shape == (14,)


def test_class_statistics_counts_ids_beyond_num_classes_as_other(tmp_path):
    pairs = write_split(tmp_path, "test", 1, odgt=False)
    cv2.imwrite(str(pairs[0][1]), np.array([[14, 1], [0, 14]], np.uint8))  # two anomaly pixels
    stats = class_statistics(StreetHazards(tmp_path, "test"), num_classes=13)
    assert stats.counts.sum() == 1 and stats.other == 2 and stats.ignored == 1


def test_plot_class_distribution_returns_a_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_class_distribution([30, 10, 60], ["road", "car", "sky"], title="t")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([30.0, 10.0, 60.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["road", "car", "sky"]
    plt.close(fig)
    with pytest.raises(ValueError, match="3 counts but 2 class names"):
        plot_class_distribution([1, 2, 3], ["a", "b"])


def test_label_encoding_rejects_and_maps():
    encoding = LabelEncoding.from_mapping({0: 255, 1: 0, 2: 1}, "0..2")
    raw = np.array([[0, 1], [2, 1]], np.uint8)
    assert encoding.encode(raw, path=Path("x.png"), dataset="D").tolist() == [[255, 0], [1, 0]]
    raw[1, 1] = 9
    with pytest.raises(DatasetError, match="annotation x.png has value 9; D labels are 0..2"):
        encoding.encode(raw, path=Path("x.png"), dataset="D")
    with pytest.raises(ValueError, match="0..255"):
        LabelEncoding.from_mapping({300: 1}, "bad")


def test_streethazards_masks_stay_uint8_through_the_transforms(tmp_path):
    seen = []

    def spy(image, mask):
        seen.append(mask.dtype)
        return image, mask

    write_split(tmp_path, "train", 1)
    _, mask = StreetHazards(tmp_path, "train", transforms=spy)[0]
    assert seen == [torch.uint8] and mask.dtype == torch.int64 and isinstance(mask, tv_tensors.Mask)


def test_loader_workers_start_after_opencv_used_its_thread_pool(tmp_path):
    # A worker forked after the main process ran a parallel OpenCV call must not hang
    # (cv2.setNumThreads in such a worker blocks forever); run in a subprocess with a timeout.
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = f"""
import cv2, numpy as np
from lib.data import StreetHazards, make_loader, train_transforms, validate_split
from tests.conftest import write_split
write_split(__import__("pathlib").Path({str(tmp_path)!r}), "train", 4)
cv2.cvtColor(np.zeros((1080, 1920, 3), np.uint8), cv2.COLOR_BGR2RGB)  # starts OpenCV's pool
__import__("time").sleep(1.0)  # its threads go from spinning to sleeping on a condition variable
validate_split({str(tmp_path)!r}, "train")
ds = StreetHazards({str(tmp_path)!r}, "train", transforms=train_transforms((8, 8)))
print(sum(len(b[0]) for b in make_loader(ds, batch_size=2, shuffle=True, num_workers=1, seed=0)))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4"


@pytest.mark.parametrize("kind", ["rgb8", "rgba8", "gray8", "rgb16", "jpeg"])
def test_read_image_same_pixels_with_or_without_pyspng(tmp_path, monkeypatch, kind):
    import lib.data

    rng = np.random.default_rng(0)
    arrays = {
        "rgb8": rng.integers(0, 256, (9, 13, 3), dtype=np.uint8),
        "rgba8": rng.integers(0, 256, (9, 13, 4), dtype=np.uint8),
        "gray8": rng.integers(0, 256, (9, 13), dtype=np.uint8),
        "rgb16": rng.integers(0, 65536, (9, 13, 3), dtype=np.uint16),
        "jpeg": rng.integers(0, 256, (9, 13, 3), dtype=np.uint8),
    }
    path = tmp_path / ("x.jpg" if kind == "jpeg" else "x.png")
    cv2.imwrite(str(path), arrays[kind])
    fast = lib.data.read_image(path)
    monkeypatch.setattr(lib.data, "_pyspng", None)
    plain = lib.data.read_image(path)
    assert fast.shape == plain.shape == (3, 9, 13) and fast.dtype == torch.uint8
    assert torch.equal(fast, plain)
    if kind == "rgb8":
        assert torch.equal(plain, torch.from_numpy(arrays[kind][:, :, ::-1].copy()).permute(2, 0, 1))
