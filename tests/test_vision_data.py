"Tests of transfer_kit.vision: image modes, EXIF orientation, image folders, corrupt files, splits, digits."
from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from transfer_kit.vision import (DigitsDataset, ImageFolderDataset, TransformSubset, collate_skip_none,
                                 digits_images, image_transforms, label_fraction, load_image,
                                 make_dataloaders, stratified_split)


def save_jpegs(folder: Path, n: int, size=(12, 10)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.jpg"
        Image.new("RGB", size, (20 * i % 256, 100, 50)).save(path)
        paths.append(path)
    return paths


def make_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        save_jpegs(root / name, n)
    return root


# --- image modes -------------------------------------------------------------------------------------

def _mode_images(tmp_path: Path) -> dict[str, Path]:
    "Write one small file per Pillow mode that photos and scans come in."
    files = {}
    files["L"] = tmp_path / "grey.png"
    Image.new("L", (6, 4), 90).save(files["L"])
    files["LA"] = tmp_path / "grey_alpha.png"
    Image.new("LA", (6, 4), (90, 128)).save(files["LA"])
    files["P"] = tmp_path / "palette.png"
    Image.new("RGB", (6, 4), (200, 30, 30)).convert("P").save(files["P"])
    files["P+transparency"] = tmp_path / "palette_transparent.gif"
    palette = Image.new("P", (6, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(files["P+transparency"], transparency=0)
    files["RGBA"] = tmp_path / "rgba.png"
    Image.new("RGBA", (6, 4), (0, 0, 255, 0)).save(files["RGBA"])
    files["CMYK"] = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(files["CMYK"])
    files["I;16"] = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 6), 32768, dtype=np.uint16)).save(files["I;16"])
    files["I;16B"] = tmp_path / "grey16b.tif"
    Image.fromarray(np.full((4, 6), 32768, dtype=">u2")).save(files["I;16B"])
    files["I"] = tmp_path / "grey32.tif"
    Image.fromarray(np.full((4, 6), 32768, dtype=np.int32)).save(files["I"])
    files["F"] = tmp_path / "float.tif"
    Image.fromarray(np.full((4, 6), 0.5, dtype=np.float32)).save(files["F"])
    return files


def test_saved_modes_are_the_intended_ones(tmp_path):
    for mode, path in _mode_images(tmp_path).items():
        assert Image.open(path).mode == mode.split("+")[0], path


def test_every_mode_becomes_three_channel_tensor(tmp_path):
    tfm = image_transforms(train=False, crop_size=4, resize_size=4)
    for mode, path in _mode_images(tmp_path).items():
        img = load_image(path)
        assert img.mode == "RGB", mode
        x = tfm(img)
        assert x.shape == (3, 4, 4), mode
        assert x.dtype == torch.float32, mode


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_mid_grey_maps_to_128(tmp_path, mode):
    img = load_image(_mode_images(tmp_path)[mode])
    assert img.getpixel((0, 0)) == (128, 128, 128)


def test_sixteen_bit_full_range_kept(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "ramp.png")
    reds = [load_image(tmp_path / "ramp.png").getpixel((i, 0))[0] for i in range(4)]
    assert reds == [0, 1, 128, 255]


def test_float_image_scaled(tmp_path):
    assert load_image(_mode_images(tmp_path)["F"]).getpixel((0, 0)) == (128, 128, 128)


def test_transparency_composited_on_white(tmp_path):
    files = _mode_images(tmp_path)
    assert load_image(files["RGBA"]).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(files["RGBA"], background=None).getpixel((0, 0)) == (0, 0, 255)
    assert load_image(files["P+transparency"]).getpixel((0, 0)) == (255, 255, 255)
    grey = load_image(files["LA"]).getpixel((0, 0))
    assert all(abs(c - (90 * 128 + 255 * 127) / 255) <= 1 for c in grey)


def test_cmyk_colour_converted(tmp_path):
    red, green, blue = load_image(_mode_images(tmp_path)["CMYK"]).getpixel((3, 2))
    assert red > 200
    assert green < 60
    assert blue < 60


# --- EXIF orientation --------------------------------------------------------------------------------

def test_exif_orientation_6_loads_upright(tmp_path):
    stored = Image.new("RGB", (60, 40), "white")
    stored.paste((255, 0, 0), (0, 0, 15, 15))  # red block at the stored top-left corner
    exif = Image.Exif()
    exif[274] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "turned.jpg")
    assert img.size == (40, 60)
    top_right = img.getpixel((40 - 5, 5))
    top_left = img.getpixel((5, 5))
    assert top_right[0] > 200, top_right
    assert top_right[1] < 60, top_right
    assert top_left[1] > 200, top_left


# --- image folders -----------------------------------------------------------------------------------

def test_hidden_entries_never_become_classes(tmp_path):
    root = make_folder(tmp_path / "set", {"ants": 2, "bees": 3})
    (root / ".ipynb_checkpoints").mkdir()
    save_jpegs(root / ".ipynb_checkpoints", 1)
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "ants" / ".DS_Store").write_bytes(b"\x00\x01")
    save_jpegs(root / "ants" / ".ipynb_checkpoints", 2)
    (root / "ants" / "._img0.jpg").write_bytes(b"\x00")  # macOS resource fork
    ds = ImageFolderDataset(root)
    assert ds.classes == ["ants", "bees"]
    assert len(ds) == 5
    assert Counter(ds.targets) == {0: 2, 1: 3}
    assert all(".ipynb_checkpoints" not in str(p) for p, _ in ds.samples)


def test_non_image_files_ignored(tmp_path):
    root = make_folder(tmp_path / "set", {"a": 2, "b": 2})
    Image.new("P", (5, 5)).save(root / "a" / "placeholder.gif")
    (root / "b" / "notes.txt").write_text("hello")
    Image.new("RGB", (5, 5)).save(root / "b" / "UPPER.JPG")
    ds = ImageFolderDataset(root)
    assert len(ds) == 5
    assert sorted(p.name for p in ds.ignored) == ["notes.txt", "placeholder.gif"]


def test_empty_class_folder_raises(tmp_path):
    root = make_folder(tmp_path / "set", {"a": 2})
    (root / "empty").mkdir()
    (root / "empty" / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="empty") as info:
        ImageFolderDataset(root)
    assert str(root / "empty") in str(info.value)


def test_one_class_raises(tmp_path):
    root = make_folder(tmp_path / "set", {"only": 2})
    with pytest.raises(ValueError, match="at least 2") as info:
        ImageFolderDataset(root)
    assert str(root) in str(info.value)


def test_missing_root_raises(tmp_path):
    with pytest.raises(ValueError, match="not found") as info:
        ImageFolderDataset(tmp_path / "no_such_folder")
    assert "no_such_folder" in str(info.value)


def test_on_error_value_checked(tmp_path):
    root = make_folder(tmp_path / "set", {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="'skip' or 'raise'"):
        ImageFolderDataset(root, on_error="ignore")


# --- corrupt files -----------------------------------------------------------------------------------

def _folder_with_corrupt_files(tmp_path: Path) -> Path:
    root = make_folder(tmp_path / "set", {"a": 5, "b": 4})
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    big.save(root / "a" / "truncated.jpg", quality=95)
    data = (root / "a" / "truncated.jpg").read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "b" / "text.jpg").write_text("this is not a JPEG")
    return root


def test_corrupt_files_skipped_and_epoch_completes(tmp_path):
    root = _folder_with_corrupt_files(tmp_path)
    ds = ImageFolderDataset(root, transform=image_transforms(train=False, crop_size=8, resize_size=8))
    assert len(ds) == 11
    dl = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_skip_none)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _epoch in range(2):
            seen = Counter()
            for xb, yb in dl:
                assert xb.shape[1:] == (3, 8, 8)
                seen.update(yb.tolist())
            assert seen == {0: 5, 1: 4}
    assert sorted(p.name for p, _ in ds.skipped) == ["text.jpg", "truncated.jpg"]
    messages = [str(w.message) for w in caught if "unreadable image" in str(w.message)]
    assert len(messages) == 2  # once per file, not once per epoch
    assert any("truncated.jpg" in m for m in messages)


def test_corrupt_file_raises_when_asked(tmp_path):
    root = _folder_with_corrupt_files(tmp_path)
    ds = ImageFolderDataset(root, on_error="raise")
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.name == "text.jpg"][0]
    with pytest.raises(OSError):
        ds[bad]


def test_check_files_drops_corrupt_files(tmp_path):
    root = _folder_with_corrupt_files(tmp_path)
    ds = ImageFolderDataset(root)
    bad = ds.check_files()
    assert sorted(p.name for p, _ in bad) == ["text.jpg", "truncated.jpg"]
    assert len(ds) == 9
    assert len(ds.targets) == 9
    assert all(ds[i] is not None for i in range(len(ds)))


def test_collate_skip_none_all_none():
    assert collate_skip_none([None, None]) is None
    xb, yb = collate_skip_none([None, (torch.zeros(2), 1)])
    assert xb.shape == (1, 2)


# --- real data ---------------------------------------------------------------------------------------

def test_hymenoptera_counts(shared_data):
    train = ImageFolderDataset(shared_data / "hymenoptera_data" / "train")
    valid = ImageFolderDataset(shared_data / "hymenoptera_data" / "val")
    assert train.classes == ["ants", "bees"]
    assert valid.classes == ["ants", "bees"]
    assert len(train) == 244
    assert len(valid) == 153
    assert Counter(train.targets) == {0: 123, 1: 121}
    assert [p.name for p in train.ignored] == ["imageNotFound.gif"]


def test_hymenoptera_odd_names_load(shared_data):
    for split, name in [("train", "ant photos.jpg"), ("train", "formica.jpeg"), ("val", "F.pergan.28(f).jpg")]:
        ds = ImageFolderDataset(shared_data / "hymenoptera_data" / split)
        index = [p.name for p, _ in ds.samples].index(name)
        img, target = ds[index]
        assert img.mode == "RGB", name
        assert target == 0, name


# --- splits ------------------------------------------------------------------------------------------

def test_stratified_split_keeps_proportions():
    targets = [0] * 60 + [1] * 30 + [2] * 10
    train_idx, valid_idx = stratified_split(targets, valid_pct=0.2, seed=3)
    assert Counter(targets[i] for i in valid_idx) == {0: 12, 1: 6, 2: 2}
    assert Counter(targets[i] for i in train_idx) == {0: 48, 1: 24, 2: 8}
    assert set(train_idx).isdisjoint(valid_idx)
    assert sorted(train_idx + valid_idx) == list(range(100))


def test_stratified_split_seeded():
    targets = [0, 1] * 20
    assert stratified_split(targets, seed=1) == stratified_split(targets, seed=1)
    assert stratified_split(targets, seed=1) != stratified_split(targets, seed=2)


def test_stratified_split_rejects_bad_pct():
    with pytest.raises(ValueError, match="valid_pct=1.5"):
        stratified_split([0, 1], valid_pct=1.5)


def test_label_fraction_counts():
    targets = [0] * 50 + [1] * 30 + [2] * 3
    idx = label_fraction(targets, fraction=0.1, seed=0)
    assert Counter(targets[i] for i in idx) == {0: 5, 1: 3, 2: 1}
    idx = label_fraction(targets, per_class=2, seed=0)
    assert Counter(targets[i] for i in idx) == {0: 2, 1: 2, 2: 2}


def test_label_fraction_nested_and_within_indices():
    targets = [0] * 40 + [1] * 40
    train_idx, _valid_idx = stratified_split(targets, valid_pct=0.25, seed=0)
    small = label_fraction(targets, fraction=0.1, indices=train_idx, seed=4)
    large = label_fraction(targets, fraction=0.5, indices=train_idx, seed=4)
    assert set(small) <= set(large)
    assert set(large) <= set(train_idx)
    assert Counter(targets[i] for i in small) == {0: 3, 1: 3}


def test_label_fraction_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        label_fraction([0, 1])
    with pytest.raises(ValueError, match="fraction=0"):
        label_fraction([0, 1], fraction=0)
    with pytest.warns(UserWarning, match="only 1 items"):
        assert label_fraction([0, 1], per_class=2) == [0, 1]


# --- loaders and digits -------------------------------------------------------------------------------

def test_make_dataloaders_uses_separate_transforms(tmp_path):
    root = make_folder(tmp_path / "set", {"a": 4, "b": 4})
    ds = ImageFolderDataset(root)
    train_idx, valid_idx = stratified_split(ds.targets, valid_pct=0.25)
    train_dl, valid_dl = make_dataloaders(ds, train_idx, valid_idx, image_transforms(True, crop_size=6),
                                          image_transforms(False, crop_size=8), batch_size=3)
    assert sum(len(yb) for _xb, yb in train_dl) == 6
    assert [xb.shape[-1] for xb, _yb in valid_dl] == [8]
    assert isinstance(train_dl.dataset, TransformSubset)
    assert train_dl.num_workers == 0


def test_make_dataloaders_rejects_double_transform(tmp_path):
    root = make_folder(tmp_path / "set", {"a": 2, "b": 2})
    ds = ImageFolderDataset(root, transform=image_transforms())
    with pytest.raises(ValueError, match="transform=None"):
        make_dataloaders(ds, [0, 2], [1, 3], image_transforms(True), image_transforms())


def test_digits_images():
    digits = digits_images(size=24, per_class=5)
    assert isinstance(digits, DigitsDataset)
    assert len(digits) == 50
    assert digits.classes == [str(d) for d in range(10)]
    assert Counter(digits.targets) == {d: 5 for d in range(10)}
    img, target = digits[0]
    assert img.size == (24, 24)
    assert img.mode == "RGB"
    assert target == 0
    pixels = np.asarray(img)
    assert pixels.max() > 200  # 16 grey levels stretched to 0..255
    assert len(np.unique(pixels)) > 16  # smooth upscaling, not blocky nearest neighbour


def test_digits_full_set_and_transform():
    digits = digits_images(size=16, transform=image_transforms(False, crop_size=16, resize_size=16))
    assert len(digits) == 1797
    x, _target = digits[5]
    assert x.shape == (3, 16, 16)
