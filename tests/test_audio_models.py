"""Speech models: CTranslate2 reader, Whisper encoder parity, kit classifiers and transformers audio checkpoints."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from transfer_kit.audio import AudioCollator, collator_for
from transfer_kit.speech_models import (CT2Model, SpeechClassifier, WhisperFeatures, check_encoder_matches,
                                        create_speech_model, load_whisper_encoder, read_ct2_model,
                                        whisper_ct2_path)


@pytest.fixture(scope="module")
def ct2_encoder() -> CT2Model:
    return read_ct2_model(whisper_ct2_path(), prefix="encoder/")


def _clips(n: int, seconds: float = 1.0, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(0.2, seconds, n)
    return [{"wave": 0.1 * torch.randn(int(s * 16_000), generator=generator), "label": i % 3}
            for i, s in enumerate(lengths.tolist())]


def test_ct2_reader_whisper_tiny(ct2_encoder):
    full = read_ct2_model(whisper_ct2_path())
    assert full.spec == "WhisperSpec"
    assert len(full.variables) == 148
    assert full.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert all(name.startswith("encoder/") for name in ct2_encoder.variables)
    fused = ct2_encoder.variables["encoder/layer_0/self_attention/linear_0/weight"]
    assert fused.shape == (3 * 384, 384)
    assert fused.dtype == np.float16
    assert int(ct2_encoder.variables["encoder/num_heads"]) == 6


def test_ct2_reader_rejects_other_version(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<I", 7) + b"\0" * 8)
    with pytest.raises(ValueError, match="version 7"):
        read_ct2_model(path)


def test_ct2_reader_rejects_trailing_bytes(tmp_path):
    name = b"TinySpec"
    blob = struct.pack("<I", 6) + struct.pack("<H", len(name) + 1) + name + b"\0"
    blob += struct.pack("<II", 1, 0) + struct.pack("<I", 0) + b"junk"
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match="4 bytes after"):
        read_ct2_model(path)


def test_whisper_k_bias_slice_is_zero(ct2_encoder):
    bias = ct2_encoder.variables["encoder/layer_2/self_attention/linear_0/bias"]
    assert np.all(bias[384:768] == 0)


def test_transformers_encoder_matches_ctranslate2():
    torch.set_num_threads(1)
    encoder = load_whisper_encoder(seconds=1.0)
    result = check_encoder_matches(encoder, WhisperFeatures(seconds=1.0, cache=False), seconds=1.0)
    assert result["max_abs_value"] > 1.0
    assert result["relative"] < 1e-2, result


def test_encoder_rejects_odd_frames():
    with pytest.raises(ValueError, match="even number"):
        load_whisper_encoder(seconds=0.01)


def test_whisper_features_pool_real_frames():
    features = WhisperFeatures(seconds=1.0, cache=False)
    collate = AudioCollator("log_mel", seconds=1.0)
    clip = _clips(1, seconds=0.5)[0]
    pooled = features(collate([clip]))
    assert pooled.shape == (1, 768)
    alone = features(collate([clip]))
    together = features(collate([clip, _clips(2, seed=5)[1]]))
    torch.testing.assert_close(together[0], alone[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,weights", [("whisper-tiny.en", "DEFAULT"), ("convnet", None)])
def test_speech_classifier_trains_one_step(name, weights):
    torch.manual_seed(0)
    model = create_speech_model(name, n_out=3, weights=weights, seconds=1.0)
    assert isinstance(model, SpeechClassifier)
    groups = model.layer_groups()
    assert groups[-1] is model.head
    grouped = {id(p) for group in groups for p in group.parameters()}
    assert grouped == {id(p) for p in model.parameters() if p.requires_grad}
    batch = model.collator()(_clips(4))
    logits = model(**batch)
    assert logits.shape == (4, 3)
    torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
    assert model.head[1].weight.grad.abs().sum() > 0


def _tiny_wav2vec2_like(kind: str):
    from transformers import HubertConfig, HubertForSequenceClassification, Wav2Vec2Config, \
        Wav2Vec2ForSequenceClassification

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                  conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, num_labels=2)
    if kind == "wav2vec2":
        return Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**common))
    if kind == "distilhubert":
        return HubertForSequenceClassification(HubertConfig(**{**common, "num_hidden_layers": 1}))
    return HubertForSequenceClassification(HubertConfig(**common))


def _tiny_whisper():
    from transformers import WhisperConfig, WhisperForAudioClassification

    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=37,
                           max_source_positions=50, num_mel_bins=80, num_labels=2)
    return WhisperForAudioClassification(config)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "distilhubert", "whisper"])
def test_create_model_audio_checkpoint(kind, tmp_path):
    from transfer_kit.models import NewWeightsWarning, create_model, layer_groups

    torch.manual_seed(0)
    tiny = _tiny_whisper() if kind == "whisper" else _tiny_wav2vec2_like(kind)
    tiny.save_pretrained(tmp_path)
    with pytest.warns(NewWeightsWarning, match="classifier"):
        model = create_model(str(tmp_path), n_out=5, task="audio")
    assert model.config.num_labels == 5
    collate = collator_for(model, seconds=1.0)
    batch = collate(_clips(3))
    if kind == "whisper":
        assert batch["input_features"].shape == (3, 80, 100)
    else:
        assert batch["attention_mask"].sum(1).tolist() == [len(c["wave"]) for c in _clips(3)]
    labels = batch.pop("labels")
    logits = model(**batch).logits
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert len(layer_groups(model)) >= 3


def test_finetune_audio_fsdd_layout(tmp_path):
    from transfer_kit.audio import synthetic_digits
    from transfer_kit.speech_models import finetune_audio

    folder = synthetic_digits(tmp_path / "digits", n_per_speaker=6)
    result = finetune_audio(folder, model="convnet", epochs=1, quick=True, progress=False)
    assert result["strategy"] == "scratch"
    assert result["classes"] == [str(d) for d in range(10)]
    assert result["n_test"] == 100
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert len(result["history"]) >= 1
    json.dumps(result)


def test_finetune_audio_speech_commands_layout(tmp_path):
    import soundfile as sf
    from transfer_kit.speech_models import finetune_audio

    rng = np.random.default_rng(0)
    for word, hz in (("yes", 300), ("no", 900)):
        (tmp_path / word).mkdir()
        for speaker in range(4):
            t = np.arange(4000) / 16_000
            wave = 0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(4000)
            sf.write(tmp_path / word / f"spk{speaker}_nohash_0.wav", wave.astype(np.float32), 16_000)
    result = finetune_audio(tmp_path, model="whisper-tiny.en", epochs=1, quick=True, progress=False)
    assert result["strategy"] == "fine_tune"
    assert result["classes"] == ["no", "yes"]
    assert result["n_test"] == 2
    assert 0.0 <= result["test_accuracy"] <= 1.0


def test_finetune_audio_missing_folder(tmp_path):
    from transfer_kit.speech_models import finetune_audio

    with pytest.raises(FileNotFoundError, match="not_there"):
        finetune_audio(tmp_path / "not_there", quick=True)
