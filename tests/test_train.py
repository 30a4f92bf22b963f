"""Training: schedule, exact resume, multi-process agreement, accumulation, guard rails, CLI.

Everything runs on CPU with the tiny synthetic preset (64x128 images, MobileNetV2, a few steps).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lib import distributed
from lib import train as train_lib
from lib.classes import NUM_KNOWN_CLASSES
from lib.config import RunConfig, presets
from lib.data import normalize
from lib.experiment import make_criterion, make_datasets, make_loaders, make_model, prepare_data
from lib.losses import SegmentationLoss
from lib.train import (
    DiskSpaceError,
    LRSchedule,
    build_optimizer,
    configure_determinism,
    fit,
    load_checkpoint,
    param_groups,
    save_checkpoint,
    train_one_epoch,
    validate,
)
from lib.utils import seed_everything

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from two, and two threads spin-waiting for
    each other on a busy 2-core machine make a step ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The tiny synthetic dataset, generated once for the module (8 train, 4 val, 4 test images)."""
    root = tmp_path_factory.mktemp("data")
    prepare_data(tiny_config(root, root))
    return root


def tiny_config(data_root: Path, out_dir: Path, **changes) -> RunConfig:
    values = {**presets()["tiny"], "data_root": str(data_root), "out_dir": str(out_dir), "progress": False}
    values.update(tensorboard=False, validate_data=False)
    return RunConfig(**{**values, **changes})


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout masks are random draws that differ between 1 and 2 processes: switch them off where
    two runs must agree step for step."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def train_run(
    cfg: RunConfig, run_dir: Path, *, resume=None, on_epoch_end=None, shard=None, seed=None, dropout=True
):
    """The steps of `lib.experiment.train`, with a chosen run folder, loader sharding and seed."""
    seed_everything(cfg.seed if seed is None else seed)
    data = make_datasets(cfg)
    model = make_model(cfg) if dropout else without_dropout(make_model(cfg))
    criterion = make_criterion(cfg, data.train)
    loaders = make_loaders(cfg, data, shard=shard)
    run_dir.mkdir(parents=True, exist_ok=True)
    history = fit(
        model, loaders["train"], loaders["val"], criterion, cfg, device=torch.device("cpu"),
        run_dir=run_dir, num_classes=NUM_KNOWN_CLASSES, resume=resume, on_epoch_end=on_epoch_end,
    )  # fmt: skip
    return model, history


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.allclose(a[k].double(), b[k].double(), rtol=rtol, atol=atol)]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


# ----------------------------------------------------------------------------- schedule, groups


def test_plateau_schedule_decides_like_torch_reduce_on_plateau():
    losses = [1.0, 0.9, 0.95, 0.95, 0.9, 0.99999, 0.8, 0.8, 0.8, 0.8, 0.81, 0.7]
    ours_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    torch_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    ours = LRSchedule(ours_opt, kind="plateau", total_steps=100, patience=1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, mode="min", factor=0.5, patience=1)
    for loss in losses:
        ours.step()  # per-step calls must not move a plateau schedule
        ours.step_epoch(loss)
        reference.step(loss)
        assert ours_opt.param_groups[0]["lr"] == torch_opt.param_groups[0]["lr"]
    assert torch_opt.param_groups[0]["lr"] < 1e-3 / 2  # the sequence did trigger reductions


def test_warmup_then_poly_and_state_round_trip():
    optimizer = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
         {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}], lr=1.0,
    )  # fmt: skip
    schedule = LRSchedule(optimizer, kind="poly", total_steps=10, warmup_iters=4)
    seen = []
    for _ in range(10):
        seen.append([g["lr"] for g in optimizer.param_groups])
        schedule.step()
    for s, (backbone, head) in enumerate(seen):
        expected = min(1.0, (s + 1) / 4) * (1 - s / 10) ** 0.9
        assert head == pytest.approx(expected) and backbone == pytest.approx(0.1 * expected)
    assert seen[3][1] == pytest.approx(0.7**0.9)  # warm-up reaches the poly curve at step 3
    state = schedule.state_dict()
    fresh = LRSchedule(optimizer, kind="poly", total_steps=10, warmup_iters=4)
    fresh.load_state_dict(state)
    assert fresh.steps == 10 and optimizer.param_groups[1]["lr"] == 0.0


def test_resumed_poly_schedule_keeps_its_horizon():
    """A resume with another ``epochs`` builds the schedule over another total: the saved horizon
    must win, or the learning rate jumps at the resume."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LRSchedule(optimizer, kind="poly", total_steps=10)
    for _ in range(4):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.6**0.9)
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)  # as `fit` builds it
    resumed = LRSchedule(fresh, kind="poly", total_steps=20)  # epochs doubled on resume
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.total_steps == 10
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.6**0.9)  # no jump
    resumed.step()
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.5**0.9)  # the same curve goes on
    old_state = {k: v for k, v in schedule.state_dict().items() if k != "total_steps"}  # version 2
    resumed.load_state_dict(old_state)
    assert resumed.total_steps == 10  # kept what it had


def test_backbone_and_head_groups(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path, lr=1e-3, backbone_lr=1e-4, optimizer="sgd")
    model = make_model(cfg)
    groups = param_groups(model, cfg)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in backbone_ids for p in groups[0]["params"])
    optimizer = build_optimizer(model, cfg)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-3]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9


# ----------------------------------------------------------------------------- exact resume


class Interrupt(Exception):
    """Stands for a kill between two epochs."""


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(data_root, tmp_path, deterministic):
    cfg = tiny_config(
        data_root, tmp_path, epochs=3, scheduler="poly", warmup_iters=2, grad_clip=1.0, max_steps_per_epoch=2
    )
    _, full_history = train_run(cfg, tmp_path / "full")

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_run(cfg, tmp_path / "cut", on_epoch_end=stop_after_first)
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    after_first_epoch = weights(tmp_path / "cut" / "last.pt")
    # A fresh process would start from other random states: the checkpoint must restore them all.
    resumed_model, history = train_run(
        cfg, tmp_path / "cut", resume=load_checkpoint(tmp_path / "cut"), seed=123
    )

    full, resumed = weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "cut" / "last.pt")
    assert_same_weights(full, resumed)
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in full_history]
    assert [r["val_loss"] for r in history] == [r["val_loss"] for r in full_history]
    with open(tmp_path / "cut" / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    # Epochs 2 and 3 moved the weights far more than any tolerance: the comparison can fail.
    assert max_difference(full, after_first_epoch) > 1e-3


def fake_checkpoint(**changes) -> dict:
    """The keys `fit` checks before it builds anything (no weights: it must refuse first)."""
    state = {
        "path": "ckpts/runs/run_7/last.pt",
        "model": {},
        "optimizer": {},
        "scheduler": {"kind": "poly", "total_steps": 2, "steps": 2, "best": math.inf},
        "epoch": 1,
        "history": [{"epoch": 1}],
        "rng": [{}],
        "data_order": {"kind": "global"},
        "best_val_loss": 1.0,
        "epochs_since_best": 0,
        "world_size": 1,
    }
    return {**state, **changes}


@pytest.mark.parametrize(
    "checkpoint, message",
    [
        (
            fake_checkpoint(world_size=2, rng=[{}, {}]),
            r"run_7/last.pt was written by 2 process\(es\) and this run has 1.*random states.*"
            r"resume it with torchrun --nproc_per_node=2, or start a new run",
        ),
        (
            fake_checkpoint(),  # poly over 2 updates = 1 epoch of 2 steps, resumed with epochs=3
            r"run_7/last.pt: its poly schedule reaches learning rate 0 at optimizer step 2 \(epoch 1\).*"
            r"epochs 2-3 of epochs=3 would train nothing; resume with --epochs 1 or fewer",
        ),
    ],
    ids=["world-size", "poly-horizon"],
)
def test_resume_refuses_what_it_cannot_continue(data_root, tmp_path, checkpoint, message):
    cfg = tiny_config(data_root, tmp_path, scheduler="poly", epochs=3, max_steps_per_epoch=2)
    loaders = make_loaders(cfg, make_datasets(cfg))
    with pytest.raises(ValueError, match=message):
        fit(None, loaders["train"], loaders["val"], None, cfg, device=torch.device("cpu"),
            run_dir=tmp_path, num_classes=NUM_KNOWN_CLASSES, resume=checkpoint)  # fmt: skip
    assert list(tmp_path.glob("*.pt")) == []


# ----------------------------------------------------------------------------- checkpoint files


def test_junk_checkpoints_give_one_line_naming_the_file(data_root, tmp_path, capsys):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "config": {}, "epoch": 1}, good)
    truncated = tmp_path / "truncated" / "last.pt"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    keyless = tmp_path / "keyless.pt"
    torch.save({"model": {}}, keyless)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    foreign = tmp_path / "foreign.pt"
    keys = {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1}
    torch.save({**keys, "config": {"learning_rate": 0.1}}, foreign)
    cases = [
        (truncated.parent, "cannot be read as a torch checkpoint.*truncated or not a torch file"),
        (text, "cannot be read as a torch checkpoint.*truncated or not a torch file"),
        (keyless, r"not a training checkpoint of this project \(missing \['optimizer', 'scheduler'"),
        (listed, "holds a list, not a training checkpoint"),
        (foreign, "config that is not a RunConfig of this code.*learning_rate.*another version"),
    ]
    for path, reason in cases:
        file = path / "last.pt" if path.is_dir() else path
        with pytest.raises(ValueError, match=reason) as err:
            load_checkpoint(path)
        assert str(err.value).startswith(str(file)) and "\n" not in str(err.value)
        if "RunConfig" not in reason:
            assert "pass a last.pt or best.pt that scripts/train.py wrote" in str(err.value)
    # The command lines end with that line (exit code 2), not a traceback.
    for script, flag in (("train", "--resume"), ("test", "--checkpoint")):
        assert load_script(script).main([flag, str(text), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {text} cannot be read") and "\n" not in err


# ----------------------------------------------------------------------------- DDP


DDP_WORKER = """
import json, sys
sys.path.insert(0, {root!r})
import torch
from lib import distributed, experiment
from lib.config import RunConfig

make_model = experiment.make_model


def make_model_without_dropout(cfg, **kwargs):
    model = make_model(cfg, **kwargs)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


experiment.make_model = make_model_without_dropout
device = distributed.init_from_env(device="cpu")
experiment.train(RunConfig.from_dict(json.loads(sys.argv[1])), device=device)
distributed.cleanup()
"""


@pytest.mark.slow
def test_two_processes_agree_with_one(data_root, tmp_path):
    """torchrun with 2 CPU processes (gloo) x batch 2 against one process x batch 4, same images.

    Without augmentation, with BatchNorm statistics frozen (per-process batch statistics would
    legitimately differ; SyncBatchNorm has no CPU path) and without dropout (random masks), both
    see the same images in every step and must end with the same weights and the same validation
    numbers (summed across processes). The worker calls `lib.experiment.train`, as
    scripts/train.py does. A single process that saw other batches ends elsewhere: the comparison
    can fail.
    """
    common = dict(augment=False, freeze_bn=True, optimizer="sgd", lr=0.05, epochs=1, max_steps_per_epoch=2)
    ddp_cfg = tiny_config(data_root, tmp_path / "ddp", batch_size=2, run_name="ddp", **common)
    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER.format(root=str(ROOT)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), ddp_cfg.to_json()]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = tmp_path / "ddp" / "runs" / "ddp"
    assert sorted(p.name for p in (tmp_path / "ddp" / "runs").iterdir()) == ["ddp"]  # one run folder
    ddp = torch.load(run_dir / "last.pt", weights_only=True)
    assert ddp["world_size"] == 2 and len(ddp["rng"]) == 2
    assert not torch.equal(ddp["rng"][0]["torch"], ddp["rng"][1]["torch"])  # each process its own
    with open(run_dir / "history.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 1  # one writer

    cfg = tiny_config(data_root, tmp_path, batch_size=4, **common)
    _, single_history = train_run(cfg, tmp_path / "single", shard=(0, 1), dropout=False)
    single = weights(tmp_path / "single" / "last.pt")
    # Float32 sums in another order (two half-batch gradients averaged by all_reduce): differences of
    # ~2e-6 seen on small biases, far below the > 1e-4 of another seed (checked below).
    assert_same_weights(ddp["model"], single, rtol=1e-4, atol=1e-5)
    for key in ("train_loss", "val_loss", "val_mIoU"):
        assert ddp["history"][0][key] == pytest.approx(single_history[0][key], rel=1e-5), key

    # Control: one process with other batches (another shuffling seed) ends measurably elsewhere.
    other = tiny_config(data_root, tmp_path, batch_size=4, seed=1, **common)
    train_run(other, tmp_path / "other", shard=(0, 1), seed=0, dropout=False)
    assert max_difference(ddp["model"], weights(tmp_path / "other" / "last.pt")) > 1e-4


# ----------------------------------------------------------------------------- validation


LOSS_CASES = {
    "fl+h, class weights": dict(name="fl+h", class_weights=torch.tensor([0.5, 2.0, 1.0, 4.0, 0.25])),
    "ce+h, true-class-rows": dict(name="ce+h", entropy_term="true-class-rows", entropy_weight=0.5),
    "ce, class weights": dict(name="ce", class_weights=torch.tensor([1.0, 3.0, 0.5, 1.0, 2.0])),
}


def validation_case(loss: str) -> tuple[torch.nn.Module, TensorDataset, SegmentationLoss]:
    """A 1x1-conv model over 5 classes and 5 images whose labelled pixels differ: image i has
    i * 20 of its 96 pixels ignored (255) or outside the classes (13); image 3 none labelled."""
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Conv2d(3, 5, kernel_size=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    images = torch.randint(0, 256, (5, 3, 8, 12), dtype=torch.uint8, generator=generator)
    masks = torch.randint(0, 5, (5, 8, 12), generator=generator)
    for i in range(5):
        masks[i].view(-1)[: i * 20] = 255 if i % 2 else 13
    masks[3] = 255
    return model, TensorDataset(images, masks), SegmentationLoss(**LOSS_CASES[loss])


@pytest.mark.parametrize("loss", list(LOSS_CASES))
def test_validation_loss_is_the_loss_of_the_whole_split(loss):
    """With ignored pixels and class weights, a mean of batch losses changes with the batch size
    (and so with the number of processes); the sums must not."""
    model, data, criterion = validation_case(loss)
    images, masks = data.tensors
    with torch.no_grad():
        whole = criterion(model(normalize(images)).float(), masks).item()
    for batch_size in (1, 2, 5):
        loader = DataLoader(data, batch_size=batch_size)
        val = validate(model, loader, criterion, device=torch.device("cpu"), num_classes=5)
        assert val["val_loss"] == pytest.approx(whole, rel=1e-6), batch_size
    # Control: the batch-1 mean of image losses is far from the loss of the split.
    with torch.no_grad():
        per_image = [
            criterion(model(normalize(images[i : i + 1])).float(), masks[i : i + 1]) for i in range(5)
        ]
    assert abs(float(torch.stack(per_image).mean()) - whole) > 1e-3 * whole


class TwoProcessSum:
    """Stands for the all-reduce of two processes, in one: the first `validate` records the
    tensors its process would send, the second adds them to its own (same calls, same order)."""

    def __init__(self) -> None:
        self.sent: list[torch.Tensor] = []
        self.recording = True

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.recording:
            self.sent.append(tensor.clone())
        else:
            tensor += self.sent.pop(0)
        return tensor


def test_validation_loss_is_summed_across_processes(monkeypatch):
    """Shards {0, 2, 4} and {1, 3} (`ShardSampler`, batch 2) of two processes give the numbers
    of one process over the whole split: the sums are reduced, not the shards' means."""
    model, data, criterion = validation_case("fl+h, class weights")
    cpu = torch.device("cpu")
    single = validate(model, DataLoader(data, batch_size=5), criterion, device=cpu, num_classes=5)
    reduction = TwoProcessSum()
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "all_reduce_sum_", reduction.all_reduce_sum_)
    shards = []
    for rank in (1, 0):
        sampler = distributed.ShardSampler(data, rank=rank, world_size=2)
        loader = DataLoader(data, batch_size=2, sampler=sampler)
        shards.append(validate(model, loader, criterion, device=cpu, num_classes=5))
        reduction.recording = False
    assert not reduction.sent  # every tensor rank 1 sent was added
    assert shards[1]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-6)
    assert shards[1]["val_mIoU"] == pytest.approx(single["val_mIoU"], rel=1e-9)
    assert shards[0]["val_loss"] != pytest.approx(single["val_loss"], rel=1e-3)  # one shard alone


# ----------------------------------------------------------------------------- step mechanics


def test_gradient_accumulation_equals_the_larger_batch(data_root, tmp_path, deterministic):
    common = dict(augment=False, freeze_bn=True, optimizer="sgd", lr=0.05, epochs=1)
    train_run(
        tiny_config(data_root, tmp_path, batch_size=4, max_steps_per_epoch=1, **common), tmp_path / "big"
    )
    train_run(
        tiny_config(data_root, tmp_path, batch_size=2, grad_accum_steps=2, max_steps_per_epoch=2, **common),
        tmp_path / "accum",
    )
    big, accum = weights(tmp_path / "big" / "last.pt"), weights(tmp_path / "accum" / "last.pt")
    assert_same_weights(big, accum, rtol=1e-4, atol=1e-6)
    train_run(
        tiny_config(data_root, tmp_path, batch_size=2, max_steps_per_epoch=1, **common), tmp_path / "half"
    )
    assert max_difference(big, weights(tmp_path / "half" / "last.pt")) > 1e-4  # half the batch: elsewhere


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train_on_cpu(data_root, tmp_path, amp, monkeypatch):
    cfg = tiny_config(data_root, tmp_path, amp=amp, channels_last=True, max_steps_per_epoch=1)
    seen = []  # (training?, dtype, channels-last?) of the first backbone convolution's output

    def make_watched_model(cfg, build=make_model):
        model = build(cfg)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(
            lambda module, args, out: seen.append(
                (module.training, out.dtype, out.is_contiguous(memory_format=torch.channels_last))
            )
        )
        return model

    monkeypatch.setattr(sys.modules[__name__], "make_model", make_watched_model)
    model, history = train_run(cfg, tmp_path / amp)
    assert math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["val_loss"])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert (True, dtype, True) in seen  # autocast ran in the training step, on channels-last tensors
    checkpoint = load_checkpoint(tmp_path / amp)
    assert bool(checkpoint["scaler"]) == (amp == "fp16")  # fp16 keeps a GradScaler state


def test_nan_loss_stops_naming_epoch_and_step(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, max_steps_per_epoch=2)
    data = make_datasets(cfg)
    loaders = make_loaders(cfg, data)
    model = make_model(cfg)

    def nan_loss(logits, masks):
        return logits.mean() * float("nan")

    with pytest.raises(FloatingPointError, match="at epoch 1, step 0.*lower the learning rate"):
        fit(model, loaders["train"], loaders["val"], nan_loss, cfg, device=torch.device("cpu"),
            run_dir=tmp_path, num_classes=NUM_KNOWN_CLASSES)  # fmt: skip


def test_nan_loss_is_read_once_per_window_and_named_with_its_steps(data_root, tmp_path, monkeypatch):
    """The losses are read (and agreed on across processes) every FINITE_CHECK_STEPS steps, not
    every step; the error still names the first bad step and the steps read together."""
    monkeypatch.setattr(train_lib, "FINITE_CHECK_STEPS", 2)
    checks = []

    def counting_all_true(flag, **kwargs):
        checks.append(flag)
        return flag

    monkeypatch.setattr(distributed, "all_true", counting_all_true)
    cfg = tiny_config(data_root, tmp_path, batch_size=2, max_steps_per_epoch=4, optimizer="sgd")
    loaders = make_loaders(cfg, make_datasets(cfg))
    model = make_model(cfg)
    optimizer = build_optimizer(model, cfg)
    calls = []

    def nan_from_step_3(logits, masks):
        calls.append(len(calls))
        loss = logits.float().mean()
        return loss * float("nan") if len(calls) == 4 else loss

    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 2, step 3 \(.*every 2 steps; this check read steps 2-3\): lower the learning rate"):  # fmt: skip
        train_one_epoch(model, loaders["train"], nan_from_step_3, optimizer, cfg,
                        device=torch.device("cpu"), epoch=2)  # fmt: skip
    assert checks == [True, False]  # after steps 1 and 3: two collectives for four steps


def test_early_stopping_after_patience_epochs(data_root, tmp_path, monkeypatch):
    scripted = iter([1.0, 1.1, 0.9, 0.95, 0.95, 0.95, 0.5])

    def fake_validate(*args, **kwargs):
        return {"val_loss": next(scripted), "val_mIoU": 0.0}

    monkeypatch.setattr(train_lib, "validate", fake_validate)
    cfg = tiny_config(data_root, tmp_path, epochs=7, early_stopping_patience=2, max_steps_per_epoch=1)
    _, history = train_run(cfg, tmp_path / "run")
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]  # best at 3, then 2 epochs without
    assert load_checkpoint(tmp_path / "run", name="best.pt")["epoch"] == 3
    assert load_checkpoint(tmp_path / "run")["epoch"] == 5


def test_resume_after_early_stop_trains_no_more(data_root, tmp_path, monkeypatch):
    """Stopped early, then killed (e.g. while evaluating): the resumed run must not train on."""
    cfg = tiny_config(data_root, tmp_path, epochs=1, early_stopping_patience=1, max_steps_per_epoch=1)
    train_run(cfg, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run")
    checkpoint["epochs_since_best"] = 1  # as if epoch 1 had not improved: patience used up
    monkeypatch.setattr(
        train_lib, "train_one_epoch", lambda *a, **k: pytest.fail("trained after an early stop")
    )
    _, history = train_run(cfg.replace(epochs=5), tmp_path / "run", resume=checkpoint)
    assert [row["epoch"] for row in history] == [1]


def test_resume_restores_best_lost_to_a_kill(data_root, tmp_path):
    """Killed after last.pt and before best.pt of a best epoch: resuming puts best.pt back."""
    cfg = tiny_config(data_root, tmp_path, epochs=1, max_steps_per_epoch=1)
    train_run(cfg, tmp_path / "run")
    (tmp_path / "run" / "best.pt").unlink()
    model, history = train_run(cfg, tmp_path / "run", resume=load_checkpoint(tmp_path / "run"))
    assert len(history) == 1
    assert_same_weights(weights(tmp_path / "run" / "best.pt"), weights(tmp_path / "run" / "last.pt"))


@pytest.fixture
def global_determinism(monkeypatch):
    """Put back torch's process-wide determinism switches (and CUBLAS_WORKSPACE_CONFIG) after a test."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # monkeypatch restores it
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = False
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def test_determinism_switches(tmp_path, global_determinism, monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # no CUDA call is made: flags only
    configure_determinism(tiny_config(tmp_path, tmp_path), cpu)
    assert not torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    configure_determinism(tiny_config(tmp_path, tmp_path), cuda)
    assert torch.backends.cudnn.benchmark  # fixed crops: autotune, as before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ

    configure_determinism(tiny_config(tmp_path, tmp_path, deterministic=True), cuda)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # DeepLab's upsampling backward has none
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    configure_determinism(tiny_config(tmp_path, tmp_path), cuda)  # enabled by a caller: kept off
    assert not torch.backends.cudnn.benchmark and torch.are_deterministic_algorithms_enabled()

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own choice stays
    configure_determinism(tiny_config(tmp_path, tmp_path, deterministic=True), cpu)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_disk_space_is_checked_before_saving(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    state = {"model": {"w": torch.zeros(1000)}, "epoch": 1}
    with pytest.raises(DiskSpaceError, match=rf"in {tmp_path}.*need about [\d,]+ bytes.*only 1,000 free"):
        save_checkpoint(state, tmp_path, best=True)
    assert list(tmp_path.iterdir()) == []  # nothing half written


def test_best_is_a_snapshot_not_the_next_last(tmp_path):
    save_checkpoint({"epoch": 1, "model": {"w": torch.zeros(2)}}, tmp_path, best=True)
    save_checkpoint({"epoch": 2, "model": {"w": torch.ones(2)}}, tmp_path, best=False)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_tensorboard_logs_when_installed_and_is_skipped_when_not(data_root, tmp_path, monkeypatch):
    cfg = tiny_config(data_root, tmp_path, tensorboard=True, max_steps_per_epoch=1)
    try:
        import torch.utils.tensorboard  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    if installed:
        train_run(cfg, tmp_path / "with")
        assert list((tmp_path / "with" / "tensorboard").glob("events.out.tfevents.*"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    train_run(cfg, tmp_path / "without")
    assert not (tmp_path / "without" / "tensorboard").exists()
    assert (tmp_path / "without" / "last.pt").is_file()


# ----------------------------------------------------------------------------- command line


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_resume_and_test_scripts(data_root, tmp_path, capsys):
    train_script, test_script = load_script("train"), load_script("test")
    with pytest.raises(SystemExit):
        train_script.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--dataset",
        "--pretrained-on",
        "--gamma ",
        "--gamma_focal",
        "--loss",
        "--resume",
        "--data ",
    ):
        assert flag in help_text
    assert "PRETRAINING source" in help_text and "--gamma is the seed's spelling" in help_text
    common = [
        "--data-root",
        str(data_root),
        "--out-dir",
        str(tmp_path),
        "--no-progress",
        "--no-validate-data",
    ]

    # The seed's --dataset names pretrained weights, downloaded on first use; a download that fails
    # (no connection here) stops with one line before any folder is made.
    def no_connection(**kwargs):
        raise ConnectionError("Failed to resolve 'drive.google.com'")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gdown.download", no_connection)
        assert train_script.main(["--preset", "tiny", "--dataset", "cityscapes", *common]) == 2
    err = capsys.readouterr().err
    assert "1-BWSqAzgPMy_QiTBwYHH5xJabmCWUHCz" in err and "deeplabv3plus_mobilenet_cityscapes.pt" in err
    assert "check the internet connection and run again" in err
    assert not (tmp_path / "runs").exists()

    seed_flags = ["--loss", "fl+h", "--gamma", "0.2", "--gamma_focal", "3"]
    assert train_script.main(["--preset", "tiny", *seed_flags, *common]) == 0
    run_dir = tmp_path / "runs" / "run_0"
    saved = load_checkpoint(run_dir)
    assert (saved["config"]["entropy_weight"], saved["config"]["gamma_focal"], saved["epoch"]) == (
        0.2,
        3.0,
        1,
    )
    assert RunConfig.load(run_dir / "config.json") == RunConfig.from_dict(saved["config"])
    capsys.readouterr()

    assert train_script.main(["--resume", str(run_dir), "--lr", "0.5", *common]) == 2
    assert "--lr 0.5 (the checkpoint has 0.001)" in capsys.readouterr().err
    assert train_script.main(["--resume", str(run_dir), "--epochs", "2", *common]) == 0
    assert load_checkpoint(run_dir)["epoch"] == 2 and not (tmp_path / "runs" / "run_1").exists()

    assert test_script.main(["--checkpoint", str(run_dir), "--head", "standard", *common]) == 2
    assert "--head 'standard'" in capsys.readouterr().err
    assert test_script.main(["--checkpoint", str(run_dir), "--head", "distance", *common]) == 0
    assert "AUPR" in capsys.readouterr().out and (run_dir / "test_best.json").is_file()
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["run"] == "run_0" and rows[0]["checkpoint"].endswith("best.pt")
