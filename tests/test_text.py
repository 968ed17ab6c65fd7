"""Tests of transfer_kit.text: readers, label checks, tokenizer set-up, padding, head replacement, LoRA."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import pandas as pd

from transfer_kit.text import (TextClassificationDataset, add_lora, check_label_tensor, compare_text_strategies,
                               encode_labels, finetune_text, load_lora, load_sentiment, load_tokenizer,
                               predict_texts, read_text_table, resolve_max_length, save_lora, text_classifier,
                               text_control_panel, train_text_classifier)
from transfer_kit.train import Callback

MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(MINILM)


def tiny_bert(n_labels: int, vocab_size: int = 30522, max_positions: int = 64) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions, num_labels=n_labels)
    return BertForSequenceClassification(config)


@pytest.fixture()
def tiny_checkpoint(tmp_path, tokenizer) -> Path:
    "A 3-label tiny BERT saved like a hub checkpoint, standing in for bert-base-uncased offline."
    folder = tmp_path / "tiny-bert-3"
    tiny_bert(3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_uci_files_read_row_for_row(shared_data):
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        df = read_text_table(shared_data / "sentiment_labelled_sentences" / name)
        assert len(df) == 1000, name
        assert df.attrs["skipped"] == []
        assert df.label.value_counts().to_dict() == {0: 500, 1: 500}
    imdb = read_text_table(shared_data / "sentiment_labelled_sentences" / "imdb_labelled.txt")
    assert imdb.text.str.contains("\x85").sum() == 2  # U+0085 kept inside its sentence
    assert imdb.text.str.contains('"').any()


def test_load_sentiment_sources(shared_data):
    df = load_sentiment(["imdb", "yelp"], path=shared_data / "sentiment_labelled_sentences")
    assert len(df) == 2000
    assert set(df.label) == {"negative", "positive"}
    with pytest.raises(ValueError, match="Unknown sentiment source 'twitter'"):
        load_sentiment(["twitter"])


def test_reader_counts_bad_rows(tmp_path):
    path = tmp_path / "mixed.tsv"
    long_text = "word " * 5000
    path.write_bytes(b'text\tlabel\nsaid "hi\tpos\n\xc3\x28 broken\tneg\n\tneg\n'
                     + long_text.encode() + b"\tpos\nok\tneg\n")
    with pytest.warns(UserWarning, match=r"Skipped 2 of 5 rows in mixed.tsv: 1 not valid utf-8 \(line 3\); "
                                         r"1 empty text \(line 4\)"):
        df = read_text_table(path)
    assert df.text.tolist()[0] == 'said "hi'
    assert len(df) == 3
    assert [line for line, _ in df.attrs["skipped"]] == [3, 4]


def test_reader_missing_column_and_format(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("review,stars\ngood,5\n")
    with pytest.raises(ValueError, match=r"no column 'text'.*\['review', 'stars'\]"):
        read_text_table(path)
    with pytest.raises(ValueError, match="Pass format="):
        read_text_table(path.rename(tmp_path / "data.xlsx"))


def test_float_and_column_labels_rejected():
    with pytest.raises(TypeError, match="float dtype"):
        encode_labels(np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        encode_labels(np.array([[0], [1], [1]]))
    with pytest.raises(TypeError, match="torch.float32"):
        check_label_tensor(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        check_label_tensor(torch.tensor([[0], [1]]))


def test_float_labels_never_reach_model(tokenizer):
    model = text_classifier(MINILM, n_out=2)
    assert model.config.problem_type == "single_label_classification"
    with pytest.raises(TypeError, match="float dtype"):
        TextClassificationDataset(["good", "bad"], np.array([1.0, 0.0]), tokenizer, 32)


def test_string_and_int_label_maps(tokenizer):
    ds = TextClassificationDataset(["a", "b", "c"], ["pos", "neg", "pos"], tokenizer, 32)
    assert ds.id2label == {0: "neg", 1: "pos"}
    assert [item["labels"] for item in ds] == [1, 0, 1]
    valid = TextClassificationDataset(["d"], ["neg"], tokenizer, 32, label2id=ds.label2id)
    assert valid[0]["labels"] == 0
    ints = TextClassificationDataset(["a", "b"], [4, 2], tokenizer, 32)
    assert ints.id2label == {0: "2", 1: "4"}


def test_max_length_above_limit_warns(tokenizer):
    model = text_classifier(MINILM, n_out=2)
    with pytest.warns(UserWarning, match="above this model's limit of 512"):
        assert resolve_max_length(2048, model, tokenizer) == 512
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_max_length(128, model, tokenizer) == 128


def test_long_texts_truncated_and_counted(tokenizer):
    with pytest.warns(UserWarning, match="1 of 2 texts are longer than max_length=16"):
        ds = TextClassificationDataset(["short", "word " * 100], [0, 1], tokenizer, 16)
    assert ds.n_truncated == 1
    assert len(ds[1]["input_ids"]) == 16


def test_empty_texts_rejected(tokenizer):
    with pytest.raises(ValueError, match=r"1 texts are empty \(positions \[1\]\)"):
        TextClassificationDataset(["fine", ""], [0, 1], tokenizer, 16)
    with pytest.raises(TypeError, match="item 0 is float"):
        TextClassificationDataset([float("nan")], [0], tokenizer, 16)


def test_oversized_tokenizer_caught_at_setup(tokenizer, tmp_path):
    small = tmp_path / "small-vocab"
    tiny_bert(2, vocab_size=1000).save_pretrained(small)
    tokenizer.save_pretrained(small)
    ds = TextClassificationDataset(["good film", "bad film"], ["pos", "neg"], tokenizer, 16)
    with pytest.raises(ValueError, match="embedding table has 1000 rows"):
        train_text_classifier("full", small, ds, ds, tokenizer, epochs=1, progress=False)


def test_logits_same_alone_and_padded(tokenizer):
    model = text_classifier(MINILM, n_out=2).eval()
    texts = ["Not bad at all.", "This was the worst meal I have had in years, cold and late."]
    with torch.no_grad():
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        padded = model(**batch).logits[:1]
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the first one is padded
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)


def test_three_label_checkpoint_loads_as_two(tiny_checkpoint):
    original = BertForSequenceClassification.from_pretrained(tiny_checkpoint)
    assert original.config.num_labels == 3
    model = text_classifier(tiny_checkpoint, id2label={0: "negative", 1: "positive"})
    assert model.classifier.out_features == 2
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.head_report["new_modules"] == ["classifier"]
    for name, tensor in original.bert.state_dict().items():
        torch.testing.assert_close(model.bert.state_dict()[name], tensor, atol=0, rtol=0, msg=name)


def test_minilm_gets_new_head_encoder_intact():
    from safetensors.torch import load_file
    from transfer_kit.assets import resolve
    model = text_classifier(MINILM, n_out=2)
    weights = load_file(resolve(MINILM) / "model.safetensors")
    key = "encoder.layer.5.output.dense.weight"
    stored = weights.get(key, weights.get("bert." + key))
    torch.testing.assert_close(model.bert.encoder.layer[5].output.dense.weight, stored)
    assert model.head_report["new_modules"] == ["classifier"]


def test_lora_round_trip_identical_logits(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = add_lora(text_classifier(MINILM, id2label={0: "negative", 1: "positive"}))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert trainable / total < 0.02
    with torch.no_grad():  # move adapters and head off their initial values
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    inputs = tokenizer(["Loved it.", "Never again."], padding=True, return_tensors="pt")
    save_lora(model, tmp_path / "adapters")
    restored = load_lora(MINILM, tmp_path / "adapters").eval()
    with torch.no_grad():
        torch.testing.assert_close(restored(**inputs).logits, model(**inputs).logits, atol=1e-6, rtol=0)
    assert restored.base_model.model.config.id2label == {0: "negative", 1: "positive"}


def test_finetune_text_from_file(tiny_checkpoint, tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = [{"review": f"great product number {i}" if i % 2 else f"awful product number {i}",
             "stars": "good" if i % 2 else "bad"} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = finetune_text(path, text_column="review", label_column="stars", model=tiny_checkpoint, epochs=1,
                           quick=True, output_dir=tmp_path / "out", progress=False)
    assert result["n_train"] == 32
    assert result["n_valid"] == 8
    assert result["labels"] == {0: "bad", 1: "good"}
    assert 0 <= result["accuracy"] <= 1
    # Wall time is rounded to 0.1 s, so a tiny model on an idle machine can report 0.0.
    assert isinstance(result["seconds"], float)
    assert result["seconds"] >= 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["strategy"] == "full"
    assert saved["max_length"] == 64
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "out")
    assert reloaded.config.id2label == {0: "bad", 1: "good"}
    predictions = predict_texts(reloaded, result["tokenizer"], "great product")
    assert predictions.label[0] in {"bad", "good"}


def test_finetune_text_rejects_float_labels(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i % 2}.5\n" for i in range(10)))
    with pytest.raises(TypeError, match="float dtype"):
        finetune_text(path, model=MINILM, quick=True, progress=False)


def toy_frame(n: int = 32) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"great item {i}" if i % 2 else f"awful item {i}" for i in range(n)],
                         "label": ["pos" if i % 2 else "neg" for i in range(n)]})


class RecordLRs(Callback):
    "Record the learning rate of every optimizer group after each batch."
    def before_fit(self) -> None:
        self.lrs = []

    def after_batch(self) -> None:
        self.lrs.append([group["lr"] for group in self.learn.opt.param_groups])


def test_learner_trains_with_warmup_and_layerwise_groups(tiny_checkpoint, tokenizer):
    df = toy_frame(48)
    train = TextClassificationDataset(df.text[:32].tolist(), df.label[:32], tokenizer, 16)
    valid = TextClassificationDataset(df.text[32:].tolist(), df.label[32:], tokenizer, 16,
                                      label2id=train.label2id)
    recorder = RecordLRs()
    run = train_text_classifier("last_n", tiny_checkpoint, train, valid, tokenizer, epochs=2, batch_size=2,
                                lr=1e-3, n_layers=1, lr_decay=0.5, progress=False, callbacks=[recorder])
    assert [row["epoch"] for row in run.history] == [1, 2]
    assert {"train_loss", "valid_loss", "accuracy"} <= set(run.history[-1])
    assert run.history[-1]["accuracy"] == pytest.approx(run.accuracy)
    top = [max(lrs) for lrs in recorder.lrs]
    peak = int(np.argmax(top))
    assert 0 < peak < len(top) - 1  # linear warm-up, then decay
    assert top[peak] == pytest.approx(1e-3)
    assert top[-1] < top[peak] / 5
    ratios = sorted({round(lr / max(recorder.lrs[peak]), 6) for lr in recorder.lrs[peak]})
    assert ratios == [0.5, 1.0]  # head at lr, the one trainable encoder layer at lr * lr_decay
    assert run.trainable < run.total


def test_compare_strategies_per_strategy_epochs(tiny_checkpoint):
    df = toy_frame(40)
    table, runs = compare_text_strategies(df[:32], df[32:], tiny_checkpoint, ["scratch", "full"],
                                          epochs={"scratch": 2, "full": 1}, max_length=16, progress=False,
                                          batch_size=8)
    assert list(table.index) == ["scratch", "full"]
    assert len(runs["scratch"].history) == 2
    assert len(runs["full"].history) == 1
    with pytest.raises(ValueError, match="Unknown strategy 'ful'"):
        compare_text_strategies(df[:32], df[32:], tiny_checkpoint, ["full"], epochs={"ful": 1})


def test_control_panel_runs_from_code(tiny_checkpoint):
    df = toy_frame(40)
    panel = text_control_panel(df[:32], df[32:], checkpoints=[str(tiny_checkpoint)], max_length=16,
                               live_plot=False, progress=False)
    assert set(panel.values()) == {"checkpoint", "strategy", "frozen_layers", "lr", "epochs", "label_fraction"}
    panel.set(strategy="last_n", frozen_layers=1, epochs=1, label_fraction=0.5, lr=1e-3)
    run = panel.run()
    assert run.strategy == "last_n"
    assert len(run.history) == 1
    assert run.trainable < run.total
    with pytest.raises(ValueError):
        panel.set(strategy="prompt")
