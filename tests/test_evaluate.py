"""Tests of transfer_kit.evaluate: predictions, metrics and worst-error views."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transfer_kit.evaluate import (classification_metrics, confusion_matrix_plot, eval_mode, get_preds,
                                   show_worst_audio, show_worst_images, show_worst_texts, worst_errors)


def dropout_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))


def test_get_preds_deterministic_and_restores_modes():
    model = dropout_model().train()
    model[1].eval()
    modes = [m.training for m in model.modules()]
    x, y = torch.randn(30, 6), torch.arange(30) % 3
    dl = DataLoader(TensorDataset(x, y), batch_size=8)
    probs, targets = get_preds(model, dl)
    again, _ = get_preds(model, dl)
    assert torch.equal(probs, again)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(targets, y)
    assert torch.allclose(probs.sum(dim=1), torch.ones(30))
    assert not probs.requires_grad


def test_get_preds_restores_eval_model_and_dict_batches():
    model = dropout_model().eval()

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, features):
            return self.inner(features)

    wrapped = Wrapped().eval()
    batches = [{"features": torch.randn(4, 6), "labels": torch.tensor([0, 1, 2, 0])}]
    probs, targets = get_preds(wrapped, batches)
    assert probs.shape == (4, 3)
    assert not any(m.training for m in wrapped.modules())


def test_get_preds_empty_rejected():
    with pytest.raises(ValueError, match="no batches"):
        get_preds(dropout_model(), [])


def test_eval_mode_restores_after_error():
    model = dropout_model().train()
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert all(m.training for m in model.modules())


def test_classification_metrics_values():
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 1]
    scores = classification_metrics(y_true, y_pred, labels=["ant", "bee"])
    assert scores["accuracy"] == pytest.approx(5 / 6)
    assert scores["balanced_accuracy"] == pytest.approx(0.75)
    assert scores["macro_f1"] == pytest.approx((8 / 9 + 2 / 3) / 2)
    assert "bee" in scores["report"]
    assert scores["report_dict"]["ant"]["recall"] == 1.0


def test_classification_metrics_from_probs_and_missing_class():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    scores = classification_metrics(torch.tensor([0, 1]), probs, labels=["a", "b", "c"])
    assert scores["accuracy"] == 1.0
    assert scores["report_dict"]["c"]["precision"] == 0.0


def test_confusion_matrix_plot_counts():
    fig = confusion_matrix_plot([0, 1, 1, 2], [0, 1, 2, 2], labels=["a", "b", "c"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["1", "0", "0", "0", "1", "1", "0", "0", "1"]


def test_worst_errors_loss_order():
    probs = torch.tensor([[0.95, 0.05], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    targets = torch.tensor([1, 0, 1, 1])
    assert worst_errors(probs, targets, k=5) == [0, 1, 2]
    assert worst_errors(probs, targets, k=2) == [0, 1]
    with pytest.raises(ValueError, match="Expected probs"):
        worst_errors(probs, targets[:2])


def test_show_worst_views():
    probs = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    targets = torch.tensor([0, 1])
    images = TensorDataset(torch.randn(2, 3, 8, 8), targets)
    fig = show_worst_images(images, [0, 1], probs, targets, ["cat", "dog"], mean=[0.5] * 3, std=[0.2] * 3)
    assert "pred: dog" in fig.axes[0].get_title()
    table = show_worst_texts(["meh", "great"], [1], probs, targets, ["neg", "pos"])
    assert isinstance(table, pd.DataFrame)
    assert table.loc[0, "prediction"] == "neg"
    players = show_worst_audio([np.zeros(800), np.ones(800)], [0, 1], probs, targets, ["a", "b"], sample_rate=8000)
    assert players.data.count("<audio") == 2
