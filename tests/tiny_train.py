"""A tiny dataset and model for training-loop tests, importable from subprocesses too.

Run as a script: `python tests/tiny_train.py RUN_DIR EPOCHS [SLEEP_PER_STEP]` trains TinyNet with fit().
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class TinyDataset(Dataset):
    """Bright vs dark 8x8 images with noise; label 1 = 'spoof' = bright. Deterministic per index."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.8 + (self.y.float() * 2 - 1).view(-1, 1, 1, 1) * 0.5

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), torch.full((7,), -1, dtype=torch.long)


class TinyNet(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.conv(x)).mean((2, 3))))


def loaders(seed: int = 0, batch: int = 8) -> dict[str, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    return {"train": DataLoader(TinyDataset(64, seed), batch_size=batch, shuffle=True, generator=g),
            "val": DataLoader(TinyDataset(32, seed + 1), batch_size=batch)}


if __name__ == "__main__":
    from paperkit.losses import cross_entropy_loss
    from paperkit.train import fit

    run_dir, epochs = sys.argv[1], int(sys.argv[2])
    pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

    def slow_loss(model, x, y, cues):
        time.sleep(pause)
        return cross_entropy_loss(model, x, y, cues)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hist = fit(TinyNet(), loaders(), run_dir=run_dir, name="tiny", epochs=epochs, lr=1e-2, seed=0,
               loss_fn=slow_loss, progress=False, channels_last=False)
    import torch.distributed as dist
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if rank == 0:
        print(f"RESUMED_FROM={hist.resumed_from} EPOCHS={len(hist.rows)} WORLD={world}", flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
