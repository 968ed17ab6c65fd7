"""A Jupyter-first course kit for transfer learning: lessons and tested helpers for image, text and speech models

Modules:

- `transfer_kit.audio`: Read clips with soundfile, convert them to mono at the model's sample rate, pad them with masks, compute Whisper's log-mel features, and load FSDD or a Speech Commands folder with speaker-aware splits.
- `transfer_kit.speech_models`: Whisper tiny.en offline: read CTranslate2's model.bin, run the encoder as a frozen feature extractor or as a fine-tunable transformers `WhisperEncoder`, and compare both with a small CNN trained from scratch."""

__version__ = "0.1.0"
