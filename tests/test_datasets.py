"""Every dataset class on files written in its real layout: mapping, subsets, and every bad input."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from lib.data import DatasetError, StreetHazards, make_loader, train_transforms
from lib.datasets import BDD100K, Cityscapes, LostAndFound, RoadAnomaly, build_dataset
from tests.conftest import write_bdd100k, write_cityscapes, write_road_anomaly, write_split

# name -> (write two samples under root and return the pairs, build the dataset, a raw value the dataset rejects)
CASES = {
    "streethazards": (
        lambda r: write_split(r, "train", 2, odgt=False),
        lambda r: StreetHazards(r, "train"),
        37,
    ),
    "cityscapes": (
        lambda r: write_cityscapes(r, "train", "hamburg", 2),
        lambda r: Cityscapes(r, "train"),
        34,
    ),
    "bdd100k-10k": (lambda r: write_bdd100k(r, "train", 2), lambda r: BDD100K(r, "train"), 19),
    "bdd100k-seg": (lambda r: write_bdd100k(r, "val", 2, layout="seg"), lambda r: BDD100K(r, "val"), 100),
    "lostandfound": (
        lambda r: write_cityscapes(r, "test", "04_Maurener_Weg_8", 2, label_folder="gtCoarse", max_id=43),
        lambda r: LostAndFound(r, "test"),
        44,
    ),
    "roadanomaly": (lambda r: write_road_anomaly(r, 2), lambda r: RoadAnomaly(r), 2),
    "roadanomaly-original": (
        lambda r: write_road_anomaly(r, 2, layout="original"),
        lambda r: RoadAnomaly(r),
        7,
    ),
    "roadanomaly-release": (
        lambda r: write_road_anomaly(r, 2, layout="release"),
        lambda r: RoadAnomaly(r),
        3,
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
    write, build, bad_value = CASES[request.param]
    pairs = write(tmp_path)
    return tmp_path, pairs, build, bad_value


def _rewrite_label(path: Path, edit) -> None:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    edit(raw)
    assert cv2.imwrite(str(path), raw)


# ----------------------------------------------------------------------------- every dataset


def test_round_trip_types_and_pixels(case):
    root, pairs, build, _ = case
    ds = build(root)
    assert len(ds) == 2 and ds.validate() == 2
    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 16, 24)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (16, 24)
    expected_rgb = cv2.imread(str(pairs[0][0]))[:, :, ::-1]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected_rgb)
    values = set(mask.unique().tolist())
    assert values <= set(range(ds.num_classes)) | {255}


def test_transforms_and_loader(case):
    root, _, build, _ = case
    ds = build(root)
    ds.transforms = train_transforms((8, 8))
    images, masks = next(iter(make_loader(ds, batch_size=2, shuffle=False, num_workers=0, seed=0)))
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.uint8
    assert masks.shape == (2, 8, 8) and masks.dtype == torch.int64


def test_missing_annotation(case):
    root, pairs, build, _ = case
    pairs[0][1].unlink()
    with pytest.raises(
        DatasetError, match=f"{pairs[0][0].name} has no annotation .*{pairs[0][1].name}.*restore"
    ):
        build(root)


def test_extra_annotation(case):
    root, pairs, build, _ = case
    pairs[1][0].unlink()
    ds = build(root)
    assert len(ds) == 1
    with pytest.raises(DatasetError, match=f"{pairs[1][1].name} has no image .*{pairs[1][0].stem}"):
        ds.validate()


def test_size_mismatch(case):
    root, pairs, build, _ = case
    cv2.imwrite(str(pairs[0][1]), np.zeros((8, 8), np.uint8))
    ds = build(root)
    with pytest.raises(DatasetError, match="same size"):
        ds.validate()
    with pytest.raises(DatasetError, match="same size"):
        ds[0]


def test_out_of_range_label(case):
    root, pairs, build, bad = case

    def put(raw):
        raw[2, 3] = bad

    _rewrite_label(pairs[1][1], put)
    ds = build(root)
    with pytest.raises(DatasetError, match=f"{pairs[1][1].name} has value {bad}; .* labels are"):
        ds.validate()
    with pytest.raises(DatasetError, match=f"value {bad}"):
        ds[1]  # never silently mapped to ignore during training either


def test_rgb_annotation(case):
    root, pairs, build, _ = case
    cv2.imwrite(str(pairs[0][1]), np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(DatasetError, match=f"{pairs[0][1].name} has 3 channel.*single-channel"):
        build(root).validate()


def test_truncated_image(case):
    root, pairs, build, _ = case
    image = pairs[0][0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    with pytest.raises(DatasetError, match=f"cannot decode image {image}.*re-extract"):
        build(root).validate()


def test_truncated_annotation(case):
    root, pairs, build, _ = case
    label = pairs[1][1]
    label.write_bytes(label.read_bytes()[:60])
    with pytest.raises(DatasetError, match=f"cannot decode annotation {label}"):
        build(root).validate()


def test_empty_split(case):
    root, pairs, build, _ = case
    for image, _ in pairs:
        image.unlink()
    with pytest.raises(DatasetError, match="empty"):
        build(root)


def test_wrong_root_suggests_the_right_one(case):
    root, _, build, _ = case
    nested = root / "downloads" / "dataset"
    nested.parent.mkdir()
    staged = root.parent / f"{root.name}_staged"
    shutil.move(str(root), str(staged))
    root.mkdir()
    shutil.move(str(staged), str(nested))
    with pytest.raises(DatasetError, match=f"did you mean data_root='{nested}'"):
        build(root)


def test_unknown_split_lists_the_valid_ones(case):
    root, _, build, _ = case
    ds = build(root)
    with pytest.raises(
        DatasetError, match=", ".join(type(ds).splits) if len(type(ds).splits) > 1 else "test"
    ):
        type(ds)(root, "nonsense")


# ----------------------------------------------------------------------------- Cityscapes


def test_cityscapes_uses_the_official_table(tmp_path):
    from cityscapesscripts.helpers.labels import id2label, labels

    ((_, label),) = write_cityscapes(tmp_path, "val", "frankfurt", 1, size=(4, 40))

    def every_id(raw):
        raw[0, :34] = np.arange(34)

    _rewrite_label(label, every_id)
    raw = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    ds = Cityscapes(tmp_path, "val")
    _, mask = ds[0]
    expected = np.vectorize(lambda v: id2label[v].trainId if id2label[v].trainId not in (-1, 255) else 255)(
        raw
    )
    assert np.array_equal(mask.numpy(), expected)
    assert ds.classes == tuple(
        lb.name for lb in sorted(labels, key=lambda lb: lb.trainId) if 0 <= lb.trainId < 255
    )
    assert len(ds.classes) == 19 and ds.classes[0] == "road" and ds.classes[13] == "car"
    lut = ds.encoding.lut
    assert (lut[7], lut[26], lut[0], lut[9], lut[33]) == (
        0,
        13,
        255,
        255,
        18,
    )  # road, car, unlabeled, parking, bicycle


def test_cityscapes_city_subset_and_limit(tmp_path):
    write_cityscapes(tmp_path, "train", "hamburg", 3)
    write_cityscapes(tmp_path, "train", "bremen", 2, seed=1)
    assert len(Cityscapes(tmp_path, "train")) == 5
    hamburg = Cityscapes(tmp_path, "train", cities=["hamburg"])
    assert len(hamburg) == 3 and {s.image.parent.name for s in hamburg.samples} == {"hamburg"}
    assert hamburg.validate() == 3  # bremen's annotations are outside the subset, not "extra"
    assert len(Cityscapes(tmp_path, "train", cities="bremen", limit=1)) == 1
    with pytest.raises(DatasetError, match="no city 'paris'.*available: bremen, hamburg"):
        Cityscapes(tmp_path, "train", cities=["paris"])


def test_cityscapes_missing_root_says_how_to_download(tmp_path):
    with pytest.raises(DatasetError, match="csDownload"):
        Cityscapes(tmp_path / "absent", "train")


# ----------------------------------------------------------------------------- BDD100K


def test_bdd100k_unknown_ignored_or_class_19(tmp_path):
    write_bdd100k(tmp_path, "train", 1)
    ignored = BDD100K(tmp_path, "train")
    as_class = BDD100K(tmp_path, "train", unknown_as_class=True)
    _, m1 = ignored[0]
    _, m2 = as_class[0]
    assert (m1[0, :3] == 255).all() and (m2[0, :3] == 19).all()
    assert torch.equal(m1[m1 != 255], m2[m2 != 19]) and m1.max() <= 255 and m2.max() == 19
    assert ignored.num_classes == 19 and as_class.num_classes == 20 and as_class.classes[19] == "unknown"


def test_bdd100k_layouts(tmp_path):
    write_bdd100k(tmp_path, "val", 2, layout="seg")
    assert BDD100K(tmp_path, "val").layout == "seg"
    write_bdd100k(tmp_path, "val", 3, layout="10k", seed=1)
    assert BDD100K(tmp_path, "val").layout == "10k" and len(BDD100K(tmp_path, "val")) == 3
    assert len(BDD100K(tmp_path, "val", layout="seg")) == 2
    with pytest.raises(DatasetError, match="unknown BDD100K layout 'new'; valid: auto, 10k, seg"):
        BDD100K(tmp_path, "val", layout="new")
    (tmp_path / "images" / "10k" / "test").mkdir()  # the release: test images, no test labels
    with pytest.raises(DatasetError, match="no labels for its test split"):
        BDD100K(tmp_path, "test")


# ----------------------------------------------------------------------------- LostAndFound


def test_lostandfound_mapping(tmp_path):
    ((_, label),) = write_cityscapes(
        tmp_path, "train", "01_Hanns_Klemm_Str_45", 1, label_folder="gtCoarse", max_id=43
    )
    raw = np.zeros((16, 24), np.uint8)
    raw[0, :6] = [0, 1, 2, 43, 31, 17]
    cv2.imwrite(str(label), raw)
    _, mask = LostAndFound(tmp_path, "train")[0]
    assert mask[0, :6].tolist() == [255, 0, 1, 1, 1, 1]
    _, mask = LostAndFound(tmp_path, "train", ignore_non_hazards=True)[0]
    assert mask[0, :6].tolist() == [255, 0, 1, 1, 255, 1]
    assert LostAndFound.anomaly_id == 1 and LostAndFound.inlier_id == 0


# ----------------------------------------------------------------------------- RoadAnomaly


def test_road_anomaly_encodings(tmp_path):
    trinary, binary = tmp_path / "ra", tmp_path / "ra_binary"
    write_road_anomaly(trinary, 1, values="0/1/255")
    write_road_anomaly(binary, 1, layout="original", values="0/255")
    _, mask = RoadAnomaly(trinary)[0]
    assert (mask[4:10, 5:12] == 1).all() and (mask[-2:] == 255).all() and (mask[:4] == 0).all()
    _, mask = RoadAnomaly(binary)[0]  # auto: only 0 and 255 -> 255 is the anomaly
    assert (mask[4:10, 5:12] == 1).all() and int((mask == 1).sum()) == 42 and (mask != 255).all()
    _, mask = RoadAnomaly(binary, label_values="0/1/255")[0]  # told otherwise: 255 is void
    assert int((mask == 255).sum()) == 42
    with pytest.raises(DatasetError, match="value 1; RoadAnomaly labels are 0 .* and 255 \\(anomaly\\)"):
        RoadAnomaly(trinary, label_values="0/255")[0]
    with pytest.raises(DatasetError, match="unknown RoadAnomaly label_values"):
        RoadAnomaly(trinary, label_values="binary")


def test_road_anomaly_original_release_is_read_as_published(tmp_path):
    """frame_list.json + frames/NAME.labels/labels_semantic.png: class 2 is the anomaly, background
    (0) and road (1) are in-distribution, the whole frame counts; the LabelGrab colour and instance
    PNGs beside are not annotations; format detection knows the layout."""
    from lib.datasets import detect_format

    pairs = write_road_anomaly(tmp_path, 2, layout="release")
    ds = RoadAnomaly(tmp_path)
    assert ds.is_release and len(ds) == 2 and ds.validate() == 2
    assert [s.annotation for s in ds.samples] == [label for _, label in pairs]
    _, mask = ds[0]
    assert (mask[4:10, 5:12] == 1).all() and int((mask == 1).sum()) == 42
    assert (mask[12:, 14:] == 0).all() and (mask[:4] == 0).all() and (mask != 255).all()
    assert detect_format(tmp_path) == "roadanomaly"
    _rewrite_label(pairs[1][1], lambda raw: raw.__setitem__((0, 0), 255))  # void where present
    assert int(ds[1][1][0, 0]) == 255


def test_road_anomaly_skip_unlabeled(tmp_path):
    pairs = write_road_anomaly(tmp_path, 3)
    pairs[2][1].unlink()
    with pytest.raises(DatasetError, match="has no annotation"):
        RoadAnomaly(tmp_path)
    ds = RoadAnomaly(tmp_path, skip_unlabeled=True)
    assert len(ds) == 2 and ds.validate() == 2  # the *_color.png files are not annotations


def test_build_dataset_by_name(tmp_path):
    write_road_anomaly(tmp_path, 1)
    assert isinstance(build_dataset("RoadAnomaly", tmp_path, "test"), RoadAnomaly)
    with pytest.raises(DatasetError, match="valid names: streethazards, cityscapes, bdd100k"):
        build_dataset("mapillary", tmp_path, "train")
