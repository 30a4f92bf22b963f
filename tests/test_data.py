import json

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from lib.data import (
    DatasetError,
    StreetHazards,
    class_pixel_counts,
    find_samples,
    inverse_frequency_weights,
    make_loader,
    normalize,
    read_odgt,
    train_transforms,
    validate_split,
)
from tests.conftest import SPLIT_DIRS, write_split


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
    odgt = tmp_path / SPLIT_DIRS["val"][2]
    array_style = find_samples(tmp_path, "val")
    records = read_odgt(odgt)
    odgt.write_text("\n".join(json.dumps(r) for r in records) + "\n")  # one object per line
    assert find_samples(tmp_path, "val") == array_style
    odgt.unlink()  # no index: the folders are searched
    assert sorted(find_samples(tmp_path, "val"), key=str) == sorted(array_style, key=str)


def test_test_folders_t5_t6(tmp_path):
    write_split(tmp_path, "test", 2, odgt=False)
    for d in ("test/images/test", "test/annotations/test"):
        (tmp_path / d / "t5").rename(tmp_path / d / "t6")
    assert len(StreetHazards(tmp_path, "test")) == 2


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
    (tmp_path / SPLIT_DIRS["train"][0] / "1.png").unlink()
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
