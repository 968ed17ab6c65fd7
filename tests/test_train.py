"""Tests of transfer_kit.train: real training on sklearn's digits with small models."""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import transfer_kit.train as train_module
from transfer_kit.train import (CHECKPOINT_FILES, Callback, CheckpointCallback, EarlyStoppingCallback, Learner,
                                SaveBestCallback, cache_features, check_targets, read_checkpoint_info)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(data.target)
    return TensorDataset(x[:1200], y[:1200]), TensorDataset(x[1200:], y[1200:])


class TinyCNN(nn.Module):
    def __init__(self, n_out: int = 10):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, n_out)

    def forward(self, x):
        return self.head(self.backbone(x))

    def layer_groups(self):
        return [self.backbone, self.head]


def make_learner(digits, seed=0, **kwargs):
    torch.manual_seed(seed)
    train_ds, valid_ds = digits
    generator = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(train_ds, batch_size=64, shuffle=True, generator=generator)
    valid_dl = DataLoader(valid_ds, batch_size=256)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("lr", 1e-2)
    return Learner(TinyCNN(), train_dl, valid_dl, **kwargs)


def same_state(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_fit_lowers_loss_and_beats_chance(digits):
    learn = make_learner(digits, metrics=("accuracy", "balanced_accuracy", "macro_f1"))
    history = learn.fit(3)
    assert len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]
    assert history[-1]["accuracy"] > 0.5
    assert set(history[0]) >= {"epoch", "train_loss", "valid_loss", "accuracy", "balanced_accuracy", "macro_f1",
                               "seconds"}


def test_head_on_cached_features_learns(digits):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.5)).train()
    train_ds, valid_ds = digits
    features = cache_features(backbone, DataLoader(train_ds, batch_size=200), progress=False)
    again = cache_features(backbone, DataLoader(train_ds, batch_size=200), progress=False)
    assert torch.equal(features.tensors[0], again.tensors[0])
    assert backbone.training
    valid = cache_features(backbone, DataLoader(valid_ds, batch_size=200), progress=False)
    learn = Learner(nn.Linear(64, 10), DataLoader(features, batch_size=64, shuffle=True),
                    DataLoader(valid, batch_size=256), lr=3e-2, progress=False)
    learn.fit(3)
    assert learn.history[-1]["accuracy"] > 0.6


def test_cache_features_named_cache(digits, tmp_path):
    backbone = nn.Flatten()
    dl = DataLoader(digits[1], batch_size=100)
    first = cache_features(backbone, dl, progress=False, name="digits-flat", cache_dir=tmp_path)
    assert (tmp_path / "features" / "digits-flat.safetensors").is_file()
    second = cache_features(nn.Identity(), dl, progress=False, name="digits-flat", cache_dir=tmp_path)
    assert torch.equal(first.tensors[0], second.tensors[0])
    with pytest.raises(ValueError, match="Invalid cache name"):
        cache_features(backbone, dl, name="../x", cache_dir=tmp_path)


def test_dict_batches_and_logits_objects():
    class Output:
        def __init__(self, logits):
            self.logits = logits

    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, input_values):
            return Output(self.linear(input_values))

    torch.manual_seed(0)
    x, y = torch.randn(48, 4), torch.arange(48) % 3
    batches = [{"input_values": x[i:i + 16], "labels": y[i:i + 16]} for i in range(0, 48, 16)]
    learn = Learner(DictModel(), batches, batches, progress=False)
    learn.fit(2, schedule="constant")
    probs, targets = learn.get_preds()
    assert probs.shape == (48, 3)
    assert torch.equal(targets, y)


@pytest.mark.parametrize("targets, message", [
    (torch.zeros(8), "dtype torch.float32"),
    (torch.zeros(8, 1, dtype=torch.long), "squeeze(1)"),
    (torch.zeros(8, 2, dtype=torch.long), "shape (8, 2)"),
])
def test_check_targets_rejects(targets, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_targets(torch.zeros(8, 3), targets)


def test_fit_rejects_float_and_column_labels(digits):
    x = digits[0].tensors[0][:32]
    for labels in (torch.ones(32), torch.ones(32, 1, dtype=torch.long)):
        learn = Learner(TinyCNN(), DataLoader(TensorDataset(x, labels), batch_size=16), progress=False)
        with pytest.raises(ValueError, match="default CrossEntropyLoss"):
            learn.fit(1)


def test_empty_dataloader_rejected(digits):
    empty = DataLoader(TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="train_dl is empty"):
        Learner(TinyCNN(), empty, progress=False).fit(1)
    with pytest.raises(ValueError, match="yielded no batches"):
        make_learner(digits).validate(empty)


def test_fp16_without_cuda_rejected(digits):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, where fp16 is allowed")
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        make_learner(digits, mixed_precision="fp16")


def test_bf16_on_cpu_trains(digits):
    learn = make_learner(digits, mixed_precision="bf16", device="cpu")
    learn.fit(2)
    assert learn.history[-1]["accuracy"] > 0.3
    plain = make_learner(digits, device="cpu")
    assert plain.mixed_precision == "no"


def test_resume_gives_same_weights(digits, tmp_path):
    class StopAfter(Callback):
        def after_epoch(self):
            if self.learn.epoch + 1 == 2:
                self.learn.stop_training = True

    full = make_learner(digits)
    full.fit(4)
    interrupted = make_learner(digits, callbacks=[CheckpointCallback(tmp_path), StopAfter()])
    interrupted.fit(4)
    assert len(interrupted.history) == 2
    resumed = make_learner(digits, seed=1)
    resumed.resume(tmp_path)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.history[-1]["valid_loss"] == pytest.approx(full.history[-1]["valid_loss"], abs=1e-6)


def test_checkpoint_loads_with_weights_only(digits, tmp_path):
    learn = make_learner(digits)
    learn.fit(1)
    learn.save(tmp_path)
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert state["optimizer"] is not None
    other = make_learner(digits, seed=3)
    other.load(tmp_path)
    assert same_state(other.model.state_dict(), learn.model.state_dict())
    assert same_state(other.opt.state_dict(), learn.opt.state_dict())


def test_lr_find_restores_state(digits):
    learn = make_learner(digits)
    learn.fit(1)
    learn.model.backbone[1].eval()
    weights = copy.deepcopy(learn.model.state_dict())
    opt_state = copy.deepcopy(learn.opt.state_dict())
    modes = [m.training for m in learn.model.modules()]
    rng = torch.get_rng_state()
    result = learn.lr_find(num_it=30)
    assert same_state(learn.model.state_dict(), weights)
    assert same_state(learn.opt.state_dict(), opt_state)
    assert [m.training for m in learn.model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert result.lrs == learn.lr_find(num_it=30).lrs
    assert result.losses == pytest.approx(learn.lr_find(num_it=30).losses)
    assert 1e-7 <= result.suggested_lr <= 10


def test_lr_find_stops_on_divergence(digits):
    learn = make_learner(digits)
    result = learn.lr_find(start_lr=1e-3, end_lr=1e6, num_it=100)
    assert len(result.lrs) < 100
    assert result.suggested_lr < 1e3


def test_fine_tune_rebuilds_optimizer(digits):
    learn = make_learner(digits)
    conv = learn.model.backbone[0].weight
    head = learn.model.head.weight
    frozen_phase = {}

    class Record(Callback):
        def after_epoch(self):
            if len(self.learn.history) == 1:
                frozen_phase["conv"] = conv.detach().clone()
                frozen_phase["groups"] = len(self.learn.opt.param_groups)
                frozen_phase["bn_training"] = self.learn.model.backbone[1].training

    before_conv, before_head = conv.detach().clone(), head.detach().clone()
    learn.add_callback(Record())
    learn.fine_tune(1, freeze_epochs=1, base_lr=1e-2, lr_mult=10)
    assert torch.equal(frozen_phase["conv"], before_conv)
    assert frozen_phase["groups"] == 1
    assert frozen_phase["bn_training"] is False
    assert not torch.equal(conv.detach(), before_conv)
    assert not torch.equal(head.detach(), before_head)
    in_opt = {id(p) for group in learn.opt.param_groups for p in group["params"]}
    assert all(id(p) in in_opt for p in learn.model.parameters())
    lrs = [group["initial_lr"] for group in learn.opt.param_groups]
    assert lrs[1] / lrs[0] == pytest.approx(10)


def test_fit_warns_when_unfrozen_params_missing_from_optimizer(digits):
    learn = make_learner(digits)
    for param in learn.model.backbone.parameters():
        param.requires_grad_(False)
    learn.create_opt()
    for param in learn.model.backbone.parameters():
        param.requires_grad_(True)
    with pytest.warns(UserWarning, match="not in the optimizer"):
        learn.fit(1)


def test_param_group_ratios_kept(digits):
    def splitter(model):
        return [{"params": model.backbone.parameters(), "lr": 1e-4}, {"params": model.head.parameters(), "lr": 1e-3}]

    learn = make_learner(digits, splitter=splitter)
    learn.fit(1, lr=1e-2, schedule="constant")
    assert [group["lr"] for group in learn.opt.param_groups] == pytest.approx([1e-3, 1e-2])


def test_early_stopping_stops(digits):
    learn = make_learner(digits, callbacks=[EarlyStoppingCallback("valid_loss", patience=2, min_delta=100.0)])
    learn.fit(6)
    assert len(learn.history) == 3


def test_save_best_keeps_best_epoch(digits, tmp_path):
    best = SaveBestCallback(tmp_path / "best", monitor="accuracy")
    learn = make_learner(digits, callbacks=[best])
    learn.fit(3)
    info = read_checkpoint_info(tmp_path / "best")
    accuracies = [row["accuracy"] for row in learn.history]
    assert info["metrics"]["accuracy"] == max(accuracies)
    assert info["epoch"] == best.best_epoch


def test_save_is_atomic_when_serializer_fails(digits, tmp_path, monkeypatch):
    learn = make_learner(digits)
    learn.fit(1)
    learn.save(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in CHECKPOINT_FILES}

    def broken_save_model(model, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    learn.fit(1)
    monkeypatch.setattr(train_module, "save_model", broken_save_model)
    with pytest.raises(OSError, match="disk full"):
        learn.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(CHECKPOINT_FILES)
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content, name

    def broken_torch_save(obj, filename):
        raise RuntimeError("serializer failed")

    monkeypatch.undo()
    monkeypatch.setattr(train_module.torch, "save", broken_torch_save)
    with pytest.raises(RuntimeError, match="serializer failed"):
        learn.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(CHECKPOINT_FILES)
    assert (tmp_path / "model.safetensors").read_bytes() == before["model.safetensors"]


def test_progress_text_prints_one_line_per_epoch(digits, capsys):
    learn = make_learner(digits, progress="text")
    learn.fit(3)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3")
    assert "valid_loss" in lines[-1]
    assert "accuracy" in lines[-1]


def test_progress_auto_falls_back_to_text_without_tty(digits, capsys):
    learn = make_learner(digits, progress=True)
    learn.fit(2)
    captured = capsys.readouterr()
    assert len([line for line in captured.out.splitlines() if line.startswith("epoch")]) == 2
    assert "it/s" not in captured.err


def test_live_plot_saves_file_outside_notebook(digits, tmp_path):
    from transfer_kit.train import LivePlotCallback
    learn = make_learner(digits, callbacks=[LivePlotCallback(path=tmp_path / "curves.png")])
    learn.fit(2)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_names_rejected(digits):
    with pytest.raises(ValueError, match="Unknown metric"):
        make_learner(digits, metrics=("acc",))
    with pytest.raises(ValueError, match="Unknown schedule"):
        make_learner(digits).fit(1, schedule="cosine")
    with pytest.raises(ValueError, match="monitor='f1'"):
        make_learner(digits, callbacks=[EarlyStoppingCallback("f1")]).fit(1)
