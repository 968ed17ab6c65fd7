"""Tests of transfer_kit.freeze: frozen weights and BatchNorm stay put, optimizer pitfalls are caught."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from transfer_kit.freeze import (audit, freeze, freeze_to, frozen_bn_class, is_frozen_bn, param_groups,
                                 trainable_summary, unfreeze)
from transfer_kit.models import create_model, layer_groups

torch.set_num_threads(1)


def small_resnet(n_out: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", n_out=n_out, weights=None)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 2,
                set_to_none: bool = True) -> None:
    model.train()
    for step in range(steps):
        x = torch.randn(4, 3, 32, 32) * 3 + 1  # statistics unlike the running ones (mean 0, var 1)
        y = torch.tensor([0, 1, 0, 1])
        optimizer.zero_grad(set_to_none=set_to_none)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


def test_frozen_batchnorm_statistics_unchanged_after_training():
    model = small_resnet()
    freeze_to(model, 1)
    before = snapshot(model.backbone)
    train_steps(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    assert changed(before, model.backbone) == []
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_bn_eval_false_lets_statistics_drift():
    model = small_resnet()
    freeze_to(model, 1, bn_eval=False)
    before = snapshot(model.backbone)
    train_steps(model, torch.optim.SGD(model.head.parameters(), lr=0.1))
    drifted = changed(before, model.backbone)
    assert drifted and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in drifted)
    assert "bn_drift" in audit(model).kinds()


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.1),
], ids=["sgd_momentum", "adamw"])
def test_frozen_weights_do_not_move(make_optimizer):
    model = small_resnet()
    freeze_to(model, 1)
    optimizer = make_optimizer(model.parameters())  # frozen parameters included on purpose
    before = snapshot(model.backbone)
    train_steps(model, optimizer)
    assert changed(before, model.backbone) == []


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.1),
], ids=["sgd_momentum", "adamw"])
@pytest.mark.parametrize("set_to_none", [True, False])
def test_frozen_weights_stay_with_optimizer_built_before_freezing(make_optimizer, set_to_none):
    model = small_resnet()
    optimizer = make_optimizer(model.parameters())
    train_steps(model, optimizer, steps=1, set_to_none=set_to_none)  # momentum buffers and grads now exist
    freeze_to(model, 1)
    before = snapshot(model.backbone)
    train_steps(model, optimizer, steps=2, set_to_none=set_to_none)
    assert changed(before, model.backbone) == []
    assert not [f for f in audit(model, optimizer).warnings if f.kind == "frozen_in_optimizer"]


def test_frozen_by_hand_with_gradients_flagged():
    model = small_resnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    train_steps(model, optimizer, steps=1, set_to_none=False)
    for p in model.backbone.parameters():
        p.requires_grad_(False)  # gradients from the last step remain
    report = audit(model, optimizer)
    assert "frozen_in_optimizer" in {f.kind for f in report.warnings}
    assert "bn_drift" in {f.kind for f in report.warnings}


def test_unfrozen_layers_need_rebuilt_optimizer():
    model = small_resnet()
    freeze_to(model, 1)
    old_optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2))
    unfreeze(model)
    report = audit(model, old_optimizer)
    missing = [f for f in report.warnings if f.kind == "missing_from_optimizer"]
    assert missing and "backbone.conv1.weight" in missing[0].names
    assert "rebuild" in str(report)

    before = snapshot(model.backbone)
    train_steps(model, old_optimizer, steps=1)
    weights = [k for k in changed(before, model.backbone) if not k.endswith(("running_mean", "running_var",
                                                                             "num_batches_tracked"))]
    assert weights == [], "parameters outside the old optimizer must not change (the pitfall)"

    new_optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2))
    assert audit(model, new_optimizer).ok
    before = snapshot(model.backbone)
    train_steps(model, new_optimizer, steps=1)
    assert "conv1.weight" in changed(before, model.backbone)
    assert "layer1.0.conv1.weight" in changed(before, model.backbone)


def test_freeze_to_counts_groups():
    model = small_resnet()
    groups = layer_groups(model)
    assert len(groups) == 6  # stem, layer1..4, head
    for n in range(1, len(groups) + 1):
        freeze_to(model, n)
        trainable = [all(p.requires_grad for p in g.parameters()) for g in groups]
        frozen = [not any(p.requires_grad for p in g.parameters()) for g in groups]
        assert trainable == [False] * (len(groups) - n) + [True] * n
        assert frozen == [True] * (len(groups) - n) + [False] * n


def test_freeze_to_rejects_bad_counts():
    model = small_resnet()
    with pytest.raises(ValueError, match="has 6 layer groups"):
        freeze_to(model, 7)
    with pytest.raises(ValueError, match="from 1"):
        freeze_to(model, 0)
    with pytest.raises(TypeError):
        freeze_to(model, 1.5)


def test_freeze_to_restores_bn_mode():
    model = small_resnet()
    freeze_to(model, 1)
    model.train()
    freeze_to(model, 6)
    assert not any(is_frozen_bn(m) for m in model.modules())
    assert all(m.training for m in model.modules())
    model.eval()
    freeze_to(model, 1)
    unfreeze(model)
    assert not any(m.training for m in model.modules())


def test_freeze_keeps_state_dict_and_copies():
    model = small_resnet()
    keys = list(model.state_dict())
    freeze_to(model, 1)
    assert list(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    assert is_frozen_bn(clone.backbone.bn1)
    clone.train()
    assert not clone.backbone.bn1.training
    restored = pickle.loads(pickle.dumps(model))
    assert is_frozen_bn(restored.backbone.layer2[0].bn1)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = small_resnet()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    fresh.eval()
    assert torch.allclose(model(x), fresh(x))


def test_all_batchnorm_kinds_and_no_running_stat_norms():
    net = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm3d(3), nn.SyncBatchNorm(3), nn.GroupNorm(1, 3),
                        nn.LayerNorm(3))
    freeze(net)
    net.train()
    assert [type(m).__name__ for m in net] == ["FrozenBatchNorm1d", "FrozenBatchNorm3d", "FrozenSyncBatchNorm",
                                               "GroupNorm", "LayerNorm"]
    assert [m.training for m in net] == [False, False, False, True, True]
    assert frozen_bn_class(nn.BatchNorm2d) is frozen_bn_class(nn.BatchNorm2d)
    unfreeze(net)
    assert [type(m) for m in net[:3]] == [nn.BatchNorm1d, nn.BatchNorm3d, nn.SyncBatchNorm]
    assert all(m.training for m in net)


def test_trainable_summary_counts_tied_weights_once():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 8), nn.Linear(8, 4), nn.Linear(4, 10, bias=False))
    model[3].weight = model[0].weight
    summary = trainable_summary(model)
    assert summary["total"] == 40 + (4 * 8 + 8) + (8 * 4 + 4)
    freeze(model[0])
    summary = trainable_summary(model)
    assert summary["frozen"] == 40
    assert summary["trainable"] == 76
    assert [row["params"] for row in summary["groups"]] == [40, 40, 36, 0]
    assert "total" in str(summary)


def test_trainable_summary_by_layer_group():
    model = small_resnet(n_out=3)
    freeze_to(model, 1)
    summary = trainable_summary(model)
    assert [row["name"] for row in summary["groups"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert summary["trainable"] == 512 * 3 + 3
    assert summary["groups"][1]["frozen_bn"] == 4


def test_param_groups_layerwise_decay():
    model = small_resnet()
    groups = param_groups(model, lr=1e-3, lr_decay=0.5)
    lrs = {g["name"].split("/")[0]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"stem": 1e-3 * 0.5 ** 5, "layer1": 1e-3 * 0.5 ** 4, "layer2": 1e-3 * 0.5 ** 3,
                                 "layer3": 1e-3 * 0.5 ** 2, "layer4": 1e-3 * 0.5, "head": 1e-3})


def test_param_groups_geometric_range_and_decay_rules():
    model = small_resnet()
    freeze_to(model, 3)
    groups = param_groups(model, lr=1e-2, lr_mult=100, wd=0.05)
    names = [g["name"] for g in groups]
    assert names == ["layer3/decay", "layer3/no_decay", "layer4/decay", "layer4/no_decay", "head/decay",
                     "head/no_decay"]
    lrs = {g["name"].split("/")[0]: g["lr"] for g in groups}
    assert lrs["head"] == pytest.approx(1e-2)
    assert lrs["layer3"] == pytest.approx(1e-2 / 100 ** (2 / 5))
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params})
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}
    for group in groups:
        if group["name"].endswith("no_decay"):
            assert group["weight_decay"] == 0 and all(p.ndim == 1 for p in group["params"])
        else:
            assert group["weight_decay"] == 0.05 and all(p.ndim >= 2 for p in group["params"])
    torch.optim.AdamW(groups)  # torch accepts the extra 'name' key


def test_param_groups_tied_parameter_once(tmp_path):
    model = small_resnet()
    model.head.weight = nn.Parameter(torch.zeros(2, 512))
    model.backbone.layer4[1].extra = model.head  # the head also sits inside a lower group
    ids = [id(p) for g in param_groups(model, lr=1e-3) for p in g["params"]]
    assert len(ids) == len(set(ids))


def test_param_groups_bad_arguments():
    model = small_resnet()
    with pytest.raises(ValueError, match="not both"):
        param_groups(model, 1e-3, lr_decay=0.9, lr_mult=10)
    with pytest.raises(ValueError, match="lr_decay must be in"):
        param_groups(model, 1e-3, lr_decay=1.5)
    with pytest.raises(ValueError, match="lr_mult must be >= 1"):
        param_groups(model, 1e-3, lr_mult=0.1)


def test_audit_lists_lr_per_group():
    model = small_resnet()
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, lr_mult=10))
    report = audit(model, optimizer)
    assert report.ok
    lines = [f.message for f in report.findings if f.kind == "lr"]
    assert len(lines) == len(optimizer.param_groups)
    assert lines[-1].startswith("head/no_decay: lr=0.001")


def test_freeze_to_tiny_bert(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    model = BertForSequenceClassification.from_pretrained(tmp_path)
    freeze_to(model, 2)
    trainable = {name.split(".")[0] + "." + name.split(".")[1] for name, p in model.named_parameters()
                 if p.requires_grad}
    assert trainable == {"bert.encoder", "bert.pooler", "classifier.weight", "classifier.bias"}
    assert all(name.startswith("bert.encoder.layer.1.") for name, p in model.named_parameters()
               if p.requires_grad and name.startswith("bert.encoder"))
