"""Benchmark the Learner: training-step throughput against a bare PyTorch loop, and head training on cached
features against recomputing a frozen backbone every epoch.

Run: python bench/bench_train.py [--quick]. Prints both ratios with the hardware they were measured on.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transfer_kit.train import Learner, cache_features


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def bare_epoch(model: nn.Module, dl: DataLoader, optimizer: torch.optim.Optimizer) -> None:
    loss_func = nn.CrossEntropyLoss()
    model.train()
    for x, y in dl:
        loss = loss_func(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def bench_step_throughput(n_items: int, repeats: int) -> tuple[float, float]:
    "Return median samples/s of (Learner, bare loop) over interleaved repeats of one epoch each."
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(n_items, 3, 32, 32), torch.randint(0, 10, (n_items,)))
    dl = DataLoader(data, batch_size=64, shuffle=False)
    learn_model, bare_model = step_model(), step_model()
    bare_model.load_state_dict(learn_model.state_dict())
    learn = Learner(learn_model, dl, None, lr=1e-3, metrics=(), progress=False, device="cpu")
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=0.01)
    learn.fit(1, schedule="constant")  # warm-up: allocator, Accelerate's prepared dataloader, AdamW state
    bare_epoch(bare_model, dl, bare_opt)
    learner_rates, bare_rates = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        learn.fit(1, schedule="constant")
        learner_rates.append(n_items / (time.perf_counter() - started))
        started = time.perf_counter()
        bare_epoch(bare_model, dl, bare_opt)
        bare_rates.append(n_items / (time.perf_counter() - started))
    return statistics.median(learner_rates), statistics.median(bare_rates)


def frozen_backbone() -> tuple[nn.Module, int, str]:
    "Return (backbone, n_features, description): EfficientNet-Lite0 from transfer_kit.models, else resnet18."
    try:
        from transfer_kit.models import create_model
        model = create_model("efficientnet_lite0", n_out=10)
        return model.backbone, model.n_features, "efficientnet_lite0 (pretrained, transfer_kit.models)"
    except Exception as err:  # any failure to build it falls back to an architecture that always builds
        from torchvision.models import resnet18
        backbone = resnet18(weights=None)
        n_features = backbone.fc.in_features
        backbone.fc = nn.Identity()
        return backbone, n_features, f"torchvision resnet18 weights=None (efficientnet_lite0 unavailable: {err})"


def bench_feature_cache(n_items: int, size: int, epochs: int) -> tuple[float, float, str]:
    "Return (seconds per epoch recomputing the backbone, seconds per epoch on cached features, backbone)."
    torch.manual_seed(0)
    backbone, n_features, description = frozen_backbone()
    for param in backbone.parameters():
        param.requires_grad_(False)
    data = TensorDataset(torch.randn(n_items, 3, size, size), torch.randint(0, 10, (n_items,)))
    image_dl = DataLoader(data, batch_size=32)

    full = nn.Sequential(backbone, nn.Linear(n_features, 10))
    learn = Learner(full, image_dl, None, metrics=(), progress=False, device="cpu")
    learn.fit(epochs, schedule="constant")
    recompute = statistics.median(row["seconds"] for row in learn.history)

    started = time.perf_counter()
    features = cache_features(backbone, image_dl, device="cpu", progress=False)
    caching = time.perf_counter() - started
    head_learn = Learner(nn.Linear(n_features, 10), DataLoader(features, batch_size=32, shuffle=True), None,
                         metrics=(), progress=False, device="cpu")
    head_learn.fit(max(epochs, 3), schedule="constant")
    cached = statistics.median(row["seconds"] for row in head_learn.history)
    return recompute, cached, f"{description}; one-off caching pass {caching:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a run of about a minute on 2 cores")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n_items, repeats = (1024, 5) if args.quick else (4096, 7)
    cache_items, size, epochs = (64, 160, 2) if args.quick else (256, 224, 3)

    print(f"hardware: {cpu_model()}, torch.get_num_threads()={torch.get_num_threads()}, "
          f"torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    # NOTE: on a quiet 2-core AMD EPYC with 2 torch threads this measured 0.893, below the 0.97 target, and
    # 0.96-0.99 with --threads 1. cProfile puts the Learner's own Python at about 1 % of a step, so the gap
    # is not yet explained.
    learner_rate, bare_rate = bench_step_throughput(n_items, repeats)
    print(f"[1] training step, small CNN on 3x32x32, batch 64, AdamW, {n_items} items x {repeats} interleaved "
          f"repeats: Learner {learner_rate:.0f} samples/s, bare loop {bare_rate:.0f} samples/s, "
          f"ratio {learner_rate / bare_rate:.3f} (target >= 0.97)")
    recompute, cached, description = bench_feature_cache(cache_items, size, epochs)
    print(f"[2] head epoch on {cache_items} images of {size}px, backbone {description}: recomputing "
          f"{recompute:.3f} s/epoch, cached features {cached:.4f} s/epoch, speed-up {recompute / cached:.0f}x "
          f"(target >= 10x)")


if __name__ == "__main__":
    main()
