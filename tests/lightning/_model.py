"""A tiny LightningModule that records which windows each step trained on."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class Recorder(L.LightningModule):
    """Fits a linear map of each window's mean; keeps (epoch, window ids, padded) of every
    training batch, and the window ids of every validation batch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[tuple[int, list[int], list[bool]]] = []
        self.validated: list[tuple[int, list[int]]] = []

    def _loss(self, batch: Any) -> torch.Tensor:
        x = batch["t2m"].float().mean(dim=(1, 2)).unsqueeze(1) / 300.0
        keep = ~batch.padded  # a rank's repeated batch does not count
        return ((self.layer(x) - 1.0) ** 2)[keep].sum()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch.window_ids.tolist(), batch.padded.tolist()))
        return self._loss(batch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.sanity_checking:
            return
        self.validated.append((self.current_epoch, batch.window_ids.tolist()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(**kwargs: Any) -> L.Trainer:
    kwargs.setdefault("accelerator", "cpu")
    kwargs.setdefault("devices", 1)
    kwargs.setdefault("num_sanity_val_steps", 1)
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )
