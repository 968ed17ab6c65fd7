"""Tests of transfer_kit.recipes: image data loading and fallback, a real frozen run, predictions and exercises."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from transfer_kit.exercises import check
from transfer_kit.freeze import freeze, param_groups
from transfer_kit.models import create_model, keras_vgg16
from transfer_kit.recipes import (VISION_EXERCISES, image_data, predict_image, thumbnail_grid,
                                  train_image_classifier)


def _write_images(folder, n: int, color: tuple[int, int, int]) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(sum(color))
    for i in range(n):
        pixels = np.clip(np.array(color) + rng.integers(-20, 20, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """Point data, cache and offline settings at empty temporary folders."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    cache.mkdir()
    monkeypatch.setenv("TRANSFER_KIT_DATA", str(data))
    monkeypatch.setenv("TRANSFER_KIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "1")
    return tmp_path


def test_image_data_keeps_train_val_split(tmp_path):
    for split, n in (("train", 6), ("val", 3)):
        _write_images(tmp_path / split / "red", n, (200, 30, 30))
        _write_images(tmp_path / split / "blue", n, (30, 30, 200))
    data = image_data(tmp_path, quick=False)
    assert data.classes == ["blue", "red"]
    assert len(data.train_ds) == 12
    assert len(data.valid_ds) == 6
    assert data.class_counts().loc["total"].tolist() == [12, 6]
    assert data.image_path(0, split="valid").parent.parent.name == "val"


def test_image_data_splits_plain_folder(tmp_path):
    _write_images(tmp_path / "red", 10, (200, 30, 30))
    _write_images(tmp_path / "blue", 10, (30, 30, 200))
    data = image_data(tmp_path, quick=False)
    assert len(data.train_ds) == 16
    assert len(data.valid_ds) == 4
    assert "stratified 80/20" in data.source
    image, target = data.train_ds[0]
    assert isinstance(image, Image.Image)
    assert target in (0, 1)


def test_image_data_quick_subsets(tmp_path):
    _write_images(tmp_path / "red", 10, (200, 30, 30))
    _write_images(tmp_path / "blue", 10, (30, 30, 200))
    data = image_data(tmp_path, quick=True, per_class=3, valid_per_class=1)
    assert len(data.train_ds) == 6
    assert len(data.valid_ds) == 2
    assert len(data.subset(per_class=1).train_ds) == 2


def test_image_data_falls_back_to_digits(isolated_env, capsys):
    data = image_data("hymenoptera_data", quick=True, per_class=2)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    assert printed[0].startswith("hymenoptera_data not found")
    assert "digits instead" in printed[0]
    assert data.classes == [str(d) for d in range(10)]
    assert len(data.train_ds) == 20


def test_image_data_without_fallback_raises(isolated_env):
    with pytest.raises(FileNotFoundError, match="hymenoptera_data"):
        image_data("hymenoptera_data", fallback=False)


def test_frozen_run_on_digits_beats_chance():
    torch.set_num_threads(2)
    data = image_data("digits", quick=True, per_class=15, valid_per_class=10)
    run = train_image_classifier(data, strategy="frozen", epochs=8, image_size=64, flip=False, progress=False)
    # Chance is 0.1 for ten balanced classes.
    assert run.metrics["accuracy"] > 0.5, run.metrics
    assert run.trainable_params == 1280 * 10 + 10
    assert run.probs.shape == (100, 10)
    assert run.row()["strategy"] == "frozen"


def test_train_rejects_bad_trainable_groups():
    data = image_data("digits", quick=True, per_class=2, valid_per_class=1)
    with pytest.raises(ValueError, match="trainable_groups=11 is out of range"):
        train_image_classifier(data, strategy="fine_tune", epochs=1, image_size=32, flip=False, progress=False,
                               trainable_groups=11)


def test_predict_image_on_png(tmp_path):
    model = create_model("efficientnet_lite0", n_out=3, weights=None, labels=["cat", "dog", "bird"])
    model.image_size = 64
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((80, 100, 3), 120, dtype=np.uint8)).save(path)
    prediction = predict_image(model, path, top_k=2)
    assert len(prediction) == 2
    assert set(prediction) <= {"cat", "dog", "bird"}
    assert list(prediction.values()) == sorted(prediction.values(), reverse=True)
    assert predict_image(model, Image.open(path), top_k=5).keys() == {"cat", "dog", "bird"}
    assert model.training  # predict_image restores the caller's mode


def test_predict_image_rejects_bad_top_k(tmp_path):
    model = create_model("efficientnet_lite0", n_out=2, weights=None)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        predict_image(model, Image.new("RGB", (32, 32)), top_k=0)


def test_thumbnail_grid_per_class():
    data = image_data("digits", quick=True, per_class=3)
    figure = thumbnail_grid(data, per_class=2)
    assert len(figure.axes) == 20
    assert figure.dpi == 60


def test_exercise_keras_vgg16():
    exercise = VISION_EXERCISES["keras_vgg16_10_classes"]
    assert check(exercise, keras_vgg16(10, trainable_last=3, weights=None), verbose=False)
    assert not check(exercise, keras_vgg16(10, trainable_last=5, weights=None), verbose=False)
    assert not check(exercise, keras_vgg16(2, trainable_last=3, weights=None), verbose=False)


def test_exercise_frozen_backbone():
    exercise = VISION_EXERCISES["frozen_backbone"]
    right = create_model("efficientnet_lite0", n_out=2, weights=None)
    freeze(right.backbone)
    assert check(exercise, right, verbose=False)
    plain = create_model("efficientnet_lite0", n_out=2, weights=None)
    plain.backbone.requires_grad_(False)
    is_right, explanation = exercise.evaluate(plain)
    assert not is_right
    assert "BatchNorm" in explanation
    assert not check(exercise, create_model("efficientnet_lite0", n_out=2, weights=None), verbose=False)


def test_exercise_discriminative_lrs():
    exercise = VISION_EXERCISES["discriminative_lrs"]
    model = create_model("efficientnet_lite0", n_out=2, weights=None)
    assert check(exercise, torch.optim.AdamW(param_groups(model, lr=1e-3, lr_mult=100)), verbose=False)
    assert not check(exercise, torch.optim.AdamW(param_groups(model, lr=1e-3, lr_mult=10)), verbose=False)
    assert not check(exercise, torch.optim.AdamW(model.parameters(), lr=1e-3), verbose=False)
    assert not check(exercise, "AdamW", verbose=False)
