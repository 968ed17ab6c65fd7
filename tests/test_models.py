"""Tests of transfer_kit.models: the architecture table, offline EfficientNet-Lite0, transformers heads."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from transfer_kit.models import (ARCHITECTURES, KERAS_VGG16_LAYERS, EfficientNetLite0Weights, NewWeightsWarning,
                                 TransferModel, available_models, build_efficientnet_lite0, create_model,
                                 keras_vgg16, layer_groups, named_layer_groups)
from transfer_kit.vision import load_image

torch.set_num_threads(1)


def param_ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_head_replaced_for_every_architecture(name):
    model = create_model(name, n_out=3, weights=None)
    assert isinstance(model, TransferModel)
    model.eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(2, 3, 64, 64))
        logits = model(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, model.n_features)
    assert logits.shape == (2, 3)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_layer_groups_cover_each_parameter_once(name):
    model = create_model(name, n_out=3, weights=None)
    groups = layer_groups(model)
    ids = [id(p) for group in groups for p in group.parameters()]
    assert len(ids) == len(set(ids)), "a parameter sits in two layer groups"
    assert set(ids) == param_ids(model), "some parameters are in no layer group"
    assert param_ids(groups[-1]) == param_ids(model.head), "the last group must be exactly the new head"
    assert len(groups) >= 3


def test_unknown_model_name_suggests_closest():
    with pytest.raises(ValueError) as info:
        create_model("resnet5", n_out=2)
    message = str(info.value)
    assert "'resnet5'" in message
    assert "Did you mean 'resnet50'" in message
    assert "efficientnet_lite0" in message


def test_invalid_weights_lists_members():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        create_model("resnet18", n_out=2, weights="IMAGENET1K_V9")


def test_offline_torchvision_weights_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFER_KIT_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="efficientnet_lite0"):
        create_model("resnet18", n_out=2)


def test_transforms_follow_weights():
    model = create_model("resnet50", n_out=2, weights=None)
    assert model.preprocess.resize_size == 232  # ResNet50_Weights.IMAGENET1K_V2 resizes to 232
    lite0 = create_model("efficientnet_lite0", n_out=2, weights=None)
    assert lite0.preprocess.mean == (0.5, 0.5, 0.5)
    assert lite0.preprocess.interpolation == "bicubic"


def test_lite0_loads_strictly_and_matches_backbone():
    reference = build_efficientnet_lite0(EfficientNetLite0Weights.DEFAULT).eval()
    model = create_model("efficientnet_lite0", n_out=2).eval()
    assert model.weights == "EfficientNetLite0Weights.IMAGENET1K"
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert torch.allclose(model.backbone(x), expected, atol=1e-5)
    assert sum(p.numel() for p in reference.parameters()) == EfficientNetLite0Weights.DEFAULT.meta["num_params"]


def test_lite0_classifies_bee_photo(shared_data):
    photo = shared_data / "hymenoptera_data" / "val" / "bees" / "10870992_eebeeb3a12.jpg"
    assert photo.exists(), f"{photo} is missing from the shared data"
    model = build_efficientnet_lite0(EfficientNetLite0Weights.DEFAULT).eval()
    x = EfficientNetLite0Weights.DEFAULT.transforms().transforms(train=False)(load_image(photo))
    with torch.no_grad():
        probs = model(x[None]).softmax(-1)[0]
    assert 309 in probs.topk(5).indices.tolist(), "ImageNet class 309 ('bee') not in the top 5"
    assert probs.argmax().item() == 309


def test_labels_stored_with_model():
    model = create_model("resnet18", n_out=2, weights=None, labels=["ants", "bees"])
    assert model.id2label == {0: "ants", 1: "bees"}
    with pytest.raises(ValueError, match="3 labels"):
        create_model("resnet18", n_out=2, weights=None, labels=["a", "b", "c"])


def test_available_models_table():
    table = available_models().set_index("name")
    assert set(table.index) == set(ARCHITECTURES)
    assert table.loc["resnet50", "top1"] == pytest.approx(80.858)
    assert bool(table.loc["efficientnet_lite0", "offline"])
    assert list(table.columns) == ["weights", "params_m", "top1", "gflops", "offline"]


def test_keras_vgg16_trainable_parameters():
    model = keras_vgg16(n_out=2, weights=None)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {f"backbone.features.{i}.{kind}" for i in (24, 26, 28) for kind in ("weight", "bias")}
    expected |= {f"head.{i}.{kind}" for i in (0, 2) for kind in ("weight", "bias")}
    assert trainable == expected
    assert model.keras_trainable == ["block4_pool", "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    assert model.head[0].in_features == 512 * 7 * 7
    assert model.head[0].out_features == 128
    assert isinstance(model.head[-1], nn.Linear), "the model must return logits, not softmax output"
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def test_keras_vgg16_layer_map_is_consistent():
    assert len(KERAS_VGG16_LAYERS) == 19
    indices = [i for _, layer in KERAS_VGG16_LAYERS for i in layer]
    assert indices == list(range(31)), "each torchvision features index belongs to exactly one Keras layer"
    model = keras_vgg16(n_out=2, trainable_last=9, weights=None)  # block4_conv1 onwards
    assert {n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad} == \
        {"17", "19", "21", "24", "26", "28"}
    with pytest.raises(ValueError, match="from 0 to 19"):
        keras_vgg16(n_out=2, trainable_last=-1, weights=None)


def tiny_bert_dir(tmp_path, num_labels=2):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64, num_labels=num_labels)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    return tmp_path


def test_text_checkpoint_new_head_reported(tmp_path):
    from transformers import BertForSequenceClassification

    path = tiny_bert_dir(tmp_path)
    saved = BertForSequenceClassification.from_pretrained(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_model(str(path), n_out=3, task="text", id2label={0: "neg", 1: "neu", 2: "pos"})
    reports = [str(w.message) for w in caught if w.category is NewWeightsWarning]
    assert len(reports) == 1
    assert "classifier.weight" in reports[0]
    assert "in the body" not in reports[0]
    assert model.config.num_labels == 3
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight,
                       saved.bert.encoder.layer[1].output.dense.weight), "the body must come from the checkpoint"
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3)


def test_text_checkpoint_same_head_size_is_quiet(tmp_path):
    path = tiny_bert_dir(tmp_path, num_labels=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_model(str(path), n_out=2, task="text")
    assert not [w for w in caught if w.category is NewWeightsWarning]


def test_layer_groups_tiny_bert(tmp_path):
    model = create_model(str(tiny_bert_dir(tmp_path)), n_out=2, task="text")
    named = named_layer_groups(model)
    assert [name for name, _ in named] == ["embeddings", "layer0", "layer1", "head"]
    assert named[0][1] is model.bert.embeddings
    assert named[2][1] is model.bert.encoder.layer[1]
    assert param_ids(named[-1][1]) == param_ids(model.bert.pooler) | param_ids(model.classifier)


def tiny_wav2vec2_config():
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                          conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                          num_conv_pos_embedding_groups=2, classifier_proj_size=8)


def test_audio_checkpoint_and_layer_groups(tmp_path):
    from transformers import Wav2Vec2Model

    torch.manual_seed(0)
    body = Wav2Vec2Model(tiny_wav2vec2_config())
    body.save_pretrained(tmp_path)
    with pytest.warns(NewWeightsWarning, match="classifier.weight"):
        model = create_model(str(tmp_path), n_out=4, task="audio")
    assert torch.equal(model.wav2vec2.encoder.layers[0].feed_forward.output_dense.weight,
                       body.encoder.layers[0].feed_forward.output_dense.weight)
    named = named_layer_groups(model)
    assert [name for name, _ in named] == ["features", "layer0", "layer1", "head"]
    base = model.wav2vec2
    assert param_ids(named[0][1]) == (param_ids(base.feature_extractor) | param_ids(base.feature_projection) |
                                      param_ids(base.encoder.pos_conv_embed) | param_ids(base.encoder.layer_norm))
    assert param_ids(model.projector) | param_ids(model.classifier) <= param_ids(named[-1][1])
    ids = [id(p) for _, g in named for p in g.parameters()]
    assert sorted(ids) == sorted(param_ids(model))
    assert model(torch.randn(2, 800)).logits.shape == (2, 4)


def test_layer_groups_whisper_encoder():
    from transformers import WhisperConfig, WhisperForAudioClassification

    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=37, num_mel_bins=16,
                           max_source_positions=20, classifier_proj_size=8, num_labels=3)
    model = WhisperForAudioClassification(config)
    named = named_layer_groups(model)
    assert [name for name, _ in named] == ["conv", "layer0", "layer1", "head"]
    assert param_ids(model.encoder.conv1) <= param_ids(named[0][1])
    assert param_ids(model.classifier) | param_ids(model.encoder.layer_norm) <= param_ids(named[-1][1])
    ids = [id(p) for _, g in named for p in g.parameters()]
    assert sorted(ids) == sorted(param_ids(model))


def test_layer_groups_unknown_model():
    with pytest.raises(TypeError, match="register_splitter"):
        layer_groups(nn.Sequential(nn.Linear(2, 2)))


def test_layer_groups_from_model_method():
    class TwoStage(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
            self.fixed = nn.Parameter(torch.zeros(3), requires_grad=False)

        def layer_groups(self):
            return [self.body, self.head]

    model = TwoStage()
    named = named_layer_groups(model)
    assert [name for name, _ in named] == ["group0", "head"]
    assert named[-1][1] is model.head
    assert id(model.fixed) not in {id(p) for _, g in named for p in g.parameters()}
