"""Measure every text fine-tuning strategy on the UCI sentiment sentences and write a results table.

Full mode (default): all-MiniLM-L6-v2 on a stratified 80/20 split of the 3,000 sentences, 3 epochs,
max_length 128. --quick runs the lesson's quick sizes. The JSON written to --out records the settings, the
hardware and one row per strategy; the text lesson shows it.

    TRANSFER_KIT_DATA=../shared/data python bench/bench_text.py --out bench/results/text_full_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from transfer_kit.core import get_device
from transfer_kit.text import STRATEGIES, compare_text_strategies, load_sentiment, stratified_indices


def hardware(device: torch.device) -> str:
    "Describe the machine the numbers were measured on."
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="all-MiniLM-L6-v2", help="hub name, folder or kit asset name")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trained strategy")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text")
    parser.add_argument("--quick", action="store_true", help="300 sentences, 1 epoch, max_length 64")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--device", default=None, help="'cpu', 'cuda' or 'mps'; default: the best found")
    parser.add_argument("--out", type=Path, default=Path("bench/results/text_full_cpu.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    df = load_sentiment()
    if args.quick:
        keep, _ = stratified_indices(df.label, valid_pct=0.9, seed=0)
        df = df.iloc[keep].reset_index(drop=True)
        args.epochs, args.max_length = 1, 64
    train_idx, valid_idx = stratified_indices(df.label, valid_pct=0.2, seed=0)
    device = get_device(args.device)
    start = time.perf_counter()
    table, _ = compare_text_strategies(df.iloc[train_idx], df.iloc[valid_idx], args.checkpoint,
                                       args.strategies, epochs=args.epochs, max_length=args.max_length,
                                       device=device, progress=False)
    record = {"checkpoint": args.checkpoint, "epochs": args.epochs, "max_length": args.max_length,
              "n_train": len(train_idx), "n_valid": len(valid_idx), "quick": args.quick,
              "hardware": hardware(device), "torch": torch.__version__,
              "total_seconds": round(time.perf_counter() - start, 1),
              "command": "python bench/bench_text.py " + " ".join(os.sys.argv[1:]),
              "rows": table.reset_index().to_dict(orient="records")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.out)
    print(table.to_string())
    print(f"{record['hardware']}, {record['total_seconds']} s in all; written to {args.out}")


if __name__ == "__main__":
    main()
