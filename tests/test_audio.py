"""Audio loading: bad inputs, masks, log-mel features and the FSDD / Speech Commands datasets."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from transfer_kit.audio import (AudioCollator, AudioReadError, FSDDDataset, SilentClipWarning,
                                SpeechCommandsDataset, frame_mask, is_silent, load_audio, log_mel, pad_batch,
                                per_class_indices, read_audio, speaker_split, to_mono)


def _tone(hz: float, seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(wave: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return spectrum.argmax().item() * sample_rate / len(wave)


def test_resample_keeps_tone_pitch(tmp_path):
    path = tmp_path / "tone_8k.wav"
    sf.write(path, _tone(440, 1.0, 8000), 8000)
    wave = load_audio(path, target_rate=16_000)
    assert len(wave) == 16_000
    assert abs(_peak_hz(wave, 16_000) - 440) < 2


def test_resample_array_tone_pitch():
    wave = load_audio(_tone(440, 0.5, 8000), sample_rate=8000, target_rate=16_000)
    assert abs(_peak_hz(wave, 16_000) - 440) < 3


def test_raw_array_without_rate_rejected():
    with pytest.raises(ValueError, match="sample_rate="):
        load_audio(_tone(440, 0.1, 8000))


@pytest.mark.parametrize("layout", ["samples_channels", "channels_samples"])
def test_stereo_becomes_mono(layout):
    left, right = _tone(440, 0.5, 8000), _tone(220, 0.5, 8000)
    stereo = np.stack([left, right], axis=1 if layout == "samples_channels" else 0)
    mono = to_mono(stereo)
    assert mono.shape == (4000,)
    np.testing.assert_allclose(mono.numpy(), (left + right) / 2, atol=1e-6)


def test_stereo_file_becomes_mono(tmp_path):
    left, right = _tone(440, 0.5, 8000), np.zeros(4000, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000)
    mono = load_audio(path, target_rate=None)
    np.testing.assert_allclose(mono.numpy(), left / 2, atol=1e-4)


def test_ambiguous_channel_axis_rejected():
    with pytest.raises(ValueError, match="channels_first"):
        to_mono(np.zeros((300, 300), np.float32))


def test_short_and_long_clips_batch_with_masks():
    lengths = [200, 16_000 * 4, 7_000]
    items = [{"wave": torch.randn(n) * 0.1, "label": i} for i, n in enumerate(lengths)]
    waves, mask = pad_batch([item["wave"] for item in items])
    assert waves.shape == (3, max(lengths))
    assert mask.sum(1).tolist() == lengths
    assert waves[0, 200:].abs().sum() == 0
    batch = AudioCollator("waveform", seconds=None)(items)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["labels"].tolist() == [0, 1, 2]
    mel = AudioCollator("log_mel", seconds=2.0)(items)
    assert mel["input_features"].shape == (3, 80, 200)
    assert mel["attention_mask"].sum(1).tolist() == [2, 200, 44]


def test_frame_mask_counts_partial_frames():
    _, mask = pad_batch([torch.ones(161), torch.ones(320)])
    assert frame_mask(mask).sum(1).tolist() == [2, 2]


def test_empty_file_error_names_file(tmp_path):
    path = tmp_path / "zero_length.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioReadError, match="zero_length.wav"):
        read_audio(path)


def test_header_without_samples_is_error(tmp_path):
    path = tmp_path / "no_samples.wav"
    sf.write(path, np.zeros(0, np.float32), 8000)
    with pytest.raises(ValueError, match="no_samples.wav"):
        load_audio(path)


def test_silent_clip_finite_and_flagged():
    with pytest.warns(SilentClipWarning, match="silent"):
        wave = load_audio(np.zeros(8000, np.float32), sample_rate=8000)
    assert is_silent(wave)
    features = log_mel(wave)
    assert torch.isfinite(features).all()
    assert features.shape == (80, 100)


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    wave = load_audio(_tone(300, 1.2, 16_000), sample_rate=16_000)
    expected = WhisperFeatureExtractor(feature_size=80)(wave.numpy(), sampling_rate=16_000, padding=False,
                                                       return_tensors="np")["input_features"][0]
    ours = log_mel(wave).numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-3


def _fsdd_copy(shared_data: Path, tmp_path: Path, names: list[str]) -> Path:
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for name in names:
        (recordings / name).symlink_to(shared_data / "fsdd" / "recordings" / name)
    return tmp_path / "fsdd"


def test_text_wav_reported_and_skipped(shared_data, tmp_path):
    root = _fsdd_copy(shared_data, tmp_path, ["0_george_0.wav", "1_theo_7.wav"])
    (root / "recordings" / "2_lucas_3.wav").write_text("RIFF? no, just text\n")
    (root / "recordings" / "3_lucas_3.wav").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 2 unreadable"):
        dataset = FSDDDataset(root)
    assert len(dataset) == 2
    assert sorted(p.name for p, _ in dataset.skipped) == ["2_lucas_3.wav", "3_lucas_3.wav"]
    assert dataset[0]["wave"].ndim == 1


def test_fsdd_official_split(shared_data):
    train = FSDDDataset(shared_data / "fsdd", split="train", check_files=False)
    test = FSDDDataset(shared_data / "fsdd", split="test", check_files=False)
    assert (len(train), len(test)) == (2700, 300)
    assert set(train.paths).isdisjoint(test.paths)
    assert all(int(p.stem.split("_")[2]) < 5 for p in test.paths)
    assert sorted(set(test.targets)) == list(range(10))
    item = test[0]
    assert item["label"] == int(test.paths[0].name[0])


def test_fsdd_clip_resampled_to_16k(shared_data):
    dataset = FSDDDataset(shared_data / "fsdd", split="test", speakers=["theo"], check_files=False)
    samples, rate = read_audio(dataset.paths[0])
    assert rate == 8000
    assert len(dataset[0]["wave"]) == 2 * len(samples)


def test_speaker_split_holds_out_speaker(shared_data):
    dataset = FSDDDataset(shared_data / "fsdd", check_files=False)
    train, test = speaker_split(dataset.speakers, "theo")
    assert len(test) == 500
    assert {dataset.speakers[i] for i in test} == {"theo"}
    assert "theo" not in {dataset.speakers[i] for i in train}
    with pytest.raises(ValueError, match="Unknown speaker"):
        speaker_split(dataset.speakers, "alice")


def test_per_class_indices_balanced():
    targets = [0] * 10 + [1] * 10 + [2] * 10
    chosen = per_class_indices(targets, 5, seed=3)
    assert np.bincount(np.asarray(targets)[chosen]).tolist() == [5, 5, 5]
    assert chosen == per_class_indices(targets, 5, seed=3)
    with pytest.raises(ValueError, match="per_class=11"):
        per_class_indices(targets, 11)


def test_speech_commands_layout(tmp_path):
    tone = _tone(300, 0.2, 16_000)
    for word in ("left", "right"):
        for speaker in ("0a1b2c3d", "ffee0011"):
            (tmp_path / word).mkdir(exist_ok=True)
            sf.write(tmp_path / word / f"{speaker}_nohash_0.wav", tone, 16_000)
    (tmp_path / "_background_noise_").mkdir()
    sf.write(tmp_path / "_background_noise_" / "white_noise.wav", tone, 16_000)
    (tmp_path / "validation_list.txt").write_text("left/ffee0011_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("right/ffee0011_nohash_0.wav\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        everything = SpeechCommandsDataset(tmp_path)
    assert everything.classes == ["left", "right"]
    assert len(everything) == 4
    assert len(SpeechCommandsDataset(tmp_path, subset="training")) == 2
    assert SpeechCommandsDataset(tmp_path, subset="validation").targets == [0]
    assert SpeechCommandsDataset(tmp_path, subset="testing").speakers == ["ffee0011"]
    with pytest.raises(ValueError, match="no folder"):
        SpeechCommandsDataset(tmp_path, classes=["up"])
