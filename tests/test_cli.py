"""End-to-end tests of the `transfer-kit` command, run as a real subprocess through its entry point."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer_kit.cli import build_parser, main


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None, timeout: int = 600):
    executable = shutil.which("transfer-kit") or str(Path(sys.executable).with_name("transfer-kit"))
    env = {**os.environ, "TRANSFER_KIT_QUICK": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    return subprocess.run([executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def make_image_tree(root: Path, classes=("circles", "squares"), per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((48, 48, 3), 30, np.uint8)
            if label == 0:
                yy, xx = np.mgrid[:48, :48]
                pixels[(yy - 24) ** 2 + (xx - 24) ** 2 < 15 ** 2] = 220
            else:
                pixels[10:38, 10:38] = 220
            pixels = np.clip(pixels + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_doctor_json_reports_device(tmp_path):
    result = run_cli("doctor", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] in ("cpu", "cuda", "mps")
    assert report["quick_mode"] is True
    assert "torch" in report["packages"]


def test_quickstart_trains_and_saves(tmp_path):
    # The README's main job with its defaults: all digits, 64 px, one frozen epoch then four unfrozen.
    result = run_cli("quickstart", "--output", "qs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation accuracy" in result.stdout
    results = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert results["n_train"] + results["n_valid"] == 1797
    # Measured on 2 CPU cores: 0.914 for the frozen head and 0.989 fine-tuned; chance is 0.1.
    assert results["frozen_head"]["accuracy"] > 0.85, results
    assert results["fine_tuned"]["accuracy"] > 0.95, results
    assert (tmp_path / "qs" / "training.png").stat().st_size > 1000


def test_finetune_image_folder(tmp_path):
    data = make_image_tree(tmp_path / "shapes")
    result = run_cli("finetune", "--data", str(data), "--model", "efficientnet_lite0", "--strategy", "frozen",
                     "--epochs", "3", "--image-size", "64", "--output", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["strategy"] == "frozen"
    assert results["train images"] + 0 > 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["classes"] == ["circles", "squares"]
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_finetune_missing_folder_is_one_error_line(tmp_path):
    result = run_cli("finetune", "--data", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_finetune_unknown_model_names_choices(tmp_path, capsys):
    data = make_image_tree(tmp_path / "shapes", per_class=3)
    status = main(["finetune", "--data", str(data), "--model", "resnet19", "--quick"])
    assert status == 2
    message = capsys.readouterr().err
    assert "resnet19" in message
    assert "resnet18" in message


@pytest.mark.parametrize("argv", [["finetune", "--data", "x", "--epochs", "0"],
                                  ["finetune", "--data", "x", "--lr", "-1"],
                                  ["finetune", "--data", "x", "--task", "video"],
                                  ["finetune"]])
def test_parser_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def test_finetune_text_file(tmp_path):
    lines = ["text\tlabel"]
    positives = ["great phone, works well", "I love it", "excellent battery", "very good value", "superb sound",
                 "works perfectly", "happy with it", "best purchase"]
    negatives = ["broke after a day", "terrible sound", "I hate it", "waste of money", "very poor quality",
                 "stopped working", "awful battery", "do not buy"]
    lines += [f"{text}\tpos" for text in positives] + [f"{text}\tneg" for text in negatives]
    path = tmp_path / "reviews.tsv"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli("finetune", "--task", "text", "--data", str(path), "--epochs", "1", "--output", "textrun",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "accuracy" in result.stdout


def test_finetune_audio_fsdd(tmp_path, shared_data):
    result = run_cli("finetune", "--task", "audio", "--data", str(shared_data / "fsdd"), "--epochs", "1",
                     "--output", "audiorun", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "audiorun" / "results.json").read_text())
    assert results["model"] == "whisper-tiny.en"
    assert results["test_accuracy"] > 0.5, results  # chance is 0.1; quick mode measured 0.99 here
