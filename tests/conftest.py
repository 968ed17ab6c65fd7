"""Shared pytest fixtures for transfer_kit's tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

DATASETS = ("hymenoptera_data", "fsdd", "sentiment_labelled_sentences")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return the folder with the real test datasets, failing (never skipping) when it cannot be found.

    The folder is given by TRANSFER_KIT_DATA; `.ci/run` points it at the shared datasets beside the checkout.
    """
    value = os.environ.get("TRANSFER_KIT_DATA", "").strip()
    if not value:
        pytest.fail("TRANSFER_KIT_DATA is not set. Point it at the folder holding hymenoptera_data/, fsdd/ and "
                    "sentiment_labelled_sentences/ (for example: export TRANSFER_KIT_DATA=../shared/data).")
    root = Path(value).expanduser().resolve()
    missing = [name for name in DATASETS if not (root / name).is_dir()]
    if missing:
        pytest.fail(f"TRANSFER_KIT_DATA={value} does not contain {', '.join(missing)}. "
                    "Point it at the folder that holds the course datasets.")
    return root


@pytest.fixture(autouse=True)
def _quiet_tokenizers(monkeypatch):
    # Tokenizers' thread pool warns after a fork; tests never need its parallelism.
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
