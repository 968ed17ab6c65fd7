"""Regression tests for bad and hostile inputs, one input a student or an engineer could pass by accident per test.

Each test checks that the kit copes with the input, or raises an error that names the value and the fix."""
from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transfer_kit import config
from transfer_kit.assets import Asset, download_asset
from transfer_kit.cli import main
from transfer_kit.core import get_device
from transfer_kit.evaluate import worst_errors
from transfer_kit.freeze import param_groups
from transfer_kit.models import create_model
from transfer_kit.train import Learner
from transfer_kit.vision import ImageFolderDataset
from transfer_kit.widgets import ControlPanel, Param, backbone_param, epochs_param, freeze_param, lr_param


def _tiny_learner(targets: torch.Tensor | None = None, inputs: torch.Tensor | None = None, **kwargs) -> Learner:
    "A 4-feature, 3-class linear Learner over 16 items in batches of 8."
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=generator) if inputs is None else inputs
    y = torch.randint(0, 3, (16,), generator=generator) if targets is None else targets
    dl = DataLoader(TensorDataset(x, y), batch_size=8)
    return Learner(nn.Linear(4, 3), dl, dl, progress=False, device="cpu", **kwargs)


# --- vision ---------------------------------------------------------------------------------------------------

def test_folder_symlink_loop(tmp_path):
    for name in ("ants", "bees"):
        (tmp_path / name / "sub").mkdir(parents=True)
        Image.new("RGB", (8, 8), "red").save(tmp_path / name / "a.png")
    os.symlink(tmp_path / "ants", tmp_path / "ants" / "sub" / "loop")  # ants/sub/loop -> ants
    with pytest.warns(UserWarning, match="loop"):
        ds = ImageFolderDataset(tmp_path)
    assert len(ds) == 2  # each image once, not once per level of the loop


# --- config -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["[transfer_kit]\nquick = 1\nquick = 0\n", "[transfer_kit]\nseed = 1\n[transfer_kit]\n"])
def test_settings_malformed(tmp_path, monkeypatch, text):
    monkeypatch.delenv("TRANSFER_KIT_SETTINGS", raising=False)
    (tmp_path / "settings.ini").write_text(text)
    with pytest.raises(ValueError, match="settings.ini"):
        config.get_settings(tmp_path)


def test_settings_encoding(tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFER_KIT_SETTINGS", raising=False)
    (tmp_path / "settings.ini").write_bytes("[transfer_kit]\ndata_dir = /tmp/donn\u00e9es\n".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        config.get_settings(tmp_path)


def test_settings_other_tool_encoding(tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFER_KIT_SETTINGS", raising=False)
    (tmp_path / "settings.ini").write_bytes("[other]\nname = caf\u00e9\n".encode("latin-1"))
    assert config.find_settings_file(tmp_path) != tmp_path / "settings.ini"  # not ours: skipped, no crash


def test_settings_percent(tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSFER_KIT_SETTINGS", raising=False)
    (tmp_path / "settings.ini").write_text("[transfer_kit]\nmirror_fsdd = http://127.0.0.1/a%20b.zip\n")
    assert config.get_settings(tmp_path)["mirror_fsdd"] == "http://127.0.0.1/a%20b.zip"


def test_cache_dir_file(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("TRANSFER_KIT_CACHE_DIR", str(tmp_path / "afile"))
    with pytest.raises(ValueError, match="TRANSFER_KIT_CACHE_DIR"):
        config.cache_dir()


# --- assets -----------------------------------------------------------------------------------------------------

@pytest.fixture
def http_server():
    "A loopback server: /404 and /500 answer with that status, /short sends half the bytes it announces."
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as zf:
        zf.writestr("root/a.txt", "hello " * 100)
    body = body.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith(("/404", "/500")):
                self.send_error(int(self.path[1:4]))
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path.startswith("/short") else body)
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hashlib.sha256(body).hexdigest()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("route", ["404", "500"])
def test_download_http_error(tmp_path, http_server, route):
    base, sha = http_server
    asset = Asset(name="toy", kind="dataset", licence="-", url=f"{base}/{route}/toy.zip", sha256=sha, archive_root="root")
    with pytest.raises(ConnectionError, match=f"{route}.*toy.zip.*path="):
        download_asset(asset, tmp_path / "toy", progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_download_truncated(tmp_path, http_server):
    base, _sha = http_server
    asset = Asset(name="toy", kind="dataset", licence="-", url=f"{base}/short/toy.zip", listing_sha256="0" * 64,
                  archive_root="root")
    with pytest.raises(ConnectionError, match="incomplete"):
        download_asset(asset, tmp_path / "toy", progress=False, timeout=5)


# --- models and freeze ----------------------------------------------------------------------------------------------

def test_create_model_numpy_n_out():
    model = create_model("resnet18", np.int64(3), weights=None)
    assert model.head.out_features == 3
    assert type(model.head.out_features) is int


def test_create_model_text_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model(str(tmp_path / "no_such_model"), 2, task="text")


@pytest.mark.parametrize("lr", [0, -1e-3, float("nan"), float("inf")])
def test_param_groups_lr(lr):
    with pytest.raises(ValueError, match="lr="):
        param_groups(create_model("resnet18", 2, weights=None), lr=lr)


# --- train ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [3, -1])
def test_learner_labels_range(bad):
    targets = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(0))
    targets[5] = bad
    with pytest.raises(ValueError, match=f"{bad}.*3 classes"):
        _tiny_learner(targets).fit(1)


def test_learner_nan_loss():
    inputs = torch.randn(16, 4)
    inputs[0, 0] = float("nan")
    learn = _tiny_learner(inputs=inputs)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="lr"):
        learn.fit(1)
    assert all(torch.equal(before[k], v) for k, v in learn.model.state_dict().items())  # weights kept


def test_learner_one_cycle_4_steps():
    history = _tiny_learner().fit(2)  # 2 batches x 2 epochs: pct_start * total_steps == 1
    assert len(history) == 2


def test_learner_pct_start():
    with pytest.raises(ValueError, match="pct_start"):
        _tiny_learner().fit(1, pct_start=1.5)


def test_learner_save_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile.*folder"):
        _tiny_learner().save(tmp_path / "afile")


@pytest.mark.parametrize("name", ["model.safetensors", "training_state.pt", "checkpoint.json"])
def test_learner_corrupt_checkpoint(tmp_path, name):
    learn = _tiny_learner()
    learn.fit(1)
    learn.save(tmp_path / "ck")
    data = (tmp_path / "ck" / name).read_bytes()
    (tmp_path / "ck" / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{name}.*corrupt"):
        _tiny_learner().resume(tmp_path / "ck")


# --- evaluate ---------------------------------------------------------------------------------------------------

def test_worst_errors_negative_k():
    probs = torch.softmax(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="k=-1"):
        worst_errors(probs, torch.tensor([0, 1, 2, 0]), k=-1)


# --- widgets ----------------------------------------------------------------------------------------------------

def test_panel_numpy_values():
    panel = ControlPanel([lr_param(), epochs_param(), freeze_param(4), Param("augment", "bool", False)])
    panel.set(lr=np.float32(0.01), epochs=np.int64(2), trainable_groups=np.int32(3), augment=np.bool_(True))
    values = panel.values()
    assert values == {"lr": pytest.approx(0.01), "epochs": 2, "trainable_groups": 3, "augment": True}
    assert type(values["epochs"]) is int
    assert type(values["augment"]) is bool
    assert type(values["lr"]) is float


def test_backbone_param_empty():
    with pytest.raises(ValueError, match="options"):
        backbone_param([])


# --- core and cli -----------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_cuda_message():
    with pytest.raises(ValueError, match="CUDA is not available") as info:
        get_device("cuda")
    assert "this runs on the CPU" not in str(info.value)
    assert "'cpu'" in str(info.value)


def test_cli_data_file(tmp_path, capsys):
    (tmp_path / "images.zip").write_bytes(b"PK")
    assert main(["finetune", "--data", str(tmp_path / "images.zip"), "--quick"]) == 2
    assert "is a file" in capsys.readouterr().err


def test_cli_output_file(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert main(["finetune", "--data", "digits", "--quick", "--output", str(tmp_path / "out")]) == 2
    assert "--output" in capsys.readouterr().err
