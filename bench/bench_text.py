"""Measure every text fine-tuning strategy on the UCI sentiment sentences and write a results table.

Full mode (default): all-MiniLM-L6-v2 on a stratified 80/20 split of the 3,000 sentences, 3 epochs per trained
strategy, max_length 64 (a handful of the sentences are longer). --quick runs the lesson's quick sizes. The
JSON written to --out records the settings, the hardware and one row per strategy; the text lesson shows it.

The JSON is rewritten after each strategy, so an interrupted run keeps what it measured, and a rerun skips the
strategies already in the file (pass --redo to measure them again).

    TRANSFER_KIT_DATA=../shared/data python bench/bench_text.py --threads 1 --out bench/results/text_full_cpu.json

On a CPU that other jobs share, use --threads 1: with two threads on two busy cores, one training step took
about 7 times as long as with one thread.
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
from transfer_kit.text import (DEFAULT_LRS, STRATEGIES, compare_text_strategies, load_sentiment,
                               stratified_indices)


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
    threads = torch.get_num_threads()
    return f"CPU {cpu}, {threads} torch thread{'s' if threads != 1 else ''}, {os.cpu_count()} cores"


def write_json(path: Path, record: dict) -> None:
    "Write `record` to `path` through a temporary file, so a crash never leaves half a file."
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="all-MiniLM-L6-v2", help="hub name, folder or kit asset name")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trained strategy")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per text")
    parser.add_argument("--batch-size", type=int, default=16, help="texts per training step")
    parser.add_argument("--quick", action="store_true", help="300 sentences, 1 epoch, max_length 64")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--device", default=None, help="'cpu', 'cuda' or 'mps'; default: the best found")
    parser.add_argument("--redo", action="store_true", help="measure strategies already in --out again")
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
    settings = {"checkpoint": args.checkpoint, "epochs": args.epochs, "max_length": args.max_length,
                "batch_size": args.batch_size, "n_train": len(train_idx), "n_valid": len(valid_idx),
                "quick": args.quick}
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows = {row["strategy"]: row for row in record.get("rows", [])}
    if rows and {k: record.get(k) for k in settings} != settings:
        stored = {key: record.get(key) for key in settings}
        raise SystemExit(f"{args.out} contains results measured with other settings ({stored}), not {settings}. "
                         "Pass another --out, or delete the file to start again.")
    record.update(settings, hardware=hardware(device), torch=torch.__version__,
                  command="python bench/bench_text.py " + " ".join(os.sys.argv[1:]))
    for strategy in args.strategies:
        if strategy in rows and not args.redo:
            print(f"{strategy}: already in {args.out}, skipped (pass --redo to measure it again)")
            continue
        table, runs = compare_text_strategies(df.iloc[train_idx], df.iloc[valid_idx], args.checkpoint,
                                              [strategy], epochs=args.epochs, max_length=args.max_length,
                                              batch_size=args.batch_size, device=device, progress="text")
        row = table.reset_index().to_dict(orient="records")[0]
        row["lr"] = DEFAULT_LRS.get(strategy)
        row["epochs"] = 0 if strategy == "probe" else args.epochs
        row["history"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in epoch.items()}
                          for epoch in runs[strategy].history]
        rows[strategy] = row
        order = [s for s in STRATEGIES if s in rows]
        record["rows"] = [rows[s] for s in order]
        record["total_seconds"] = round(sum(rows[s]["seconds"] for s in order), 1)
        write_json(args.out, record)
        print(f"{strategy}: accuracy {row['accuracy']:.4f}, macro F1 {row['macro_f1']:.4f}, "
              f"{row['trainable_params']:,} trainable, {row['seconds']:.0f} s; written to {args.out}", flush=True)
    print(f"{record['hardware']}, {record.get('total_seconds', 0)} s of measured strategies in {args.out}")


if __name__ == "__main__":
    main()
