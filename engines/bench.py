"""Parity + throughput table for engines; shared by build_engines.py and bench/engines.py."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engines.base import Engine
from engines.parity import max_abs_diff, parity_inputs

log = logging.getLogger("ftcn.engines")


@dataclass
class Row:
    network: str
    backend: str
    precision: str
    device: str
    batch: int
    parity: float | None = None  # max abs diff vs the float32 torch reference
    ms_per_batch: float | None = None
    note: str = ""

    @property
    def ms_per_item(self) -> float | None:
        return None if self.ms_per_batch is None else self.ms_per_batch / self.batch

    @property
    def items_per_s(self) -> float | None:
        return None if self.ms_per_batch is None else 1000.0 * self.batch / self.ms_per_batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(engine: Engine, x: torch.Tensor, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `engine.infer(x)` in ms (CUDA synchronised)."""
    x = x.to(engine.device)
    for _ in range(warmup):
        engine.infer(x)
    _sync(engine.device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        engine.infer(x)
        _sync(engine.device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class ReferenceOutputs:
    """float32 torch reference outputs on the parity inputs, computed once per input row."""

    def __init__(self, network: str, reference: nn.Module, hw: tuple[int, int]) -> None:
        self.network, self.reference, self.hw = network, reference.eval(), hw
        self._cache: dict[int, torch.Tensor | tuple] = {}

    def unique(self) -> int:
        return 2  # the parity inputs cycle over two distinct items

    def get(self, n: int) -> torch.Tensor | tuple:
        if n not in self._cache:
            with torch.inference_mode():
                self._cache[n] = self.reference(parity_inputs(self.network, n, self.hw))
        return self._cache[n]


def measure(engine: Engine, refs: ReferenceOutputs, batch_sizes: list[int], repeats: int, warmup: int = 1
            ) -> list[Row]:
    rows = []
    for b in batch_sizes:
        x = parity_inputs(engine.network, b, refs.hw)
        row = Row(engine.network, engine.backend, engine.precision, str(engine.device), b)
        try:
            n = min(b, refs.unique())
            out = engine.infer(x[:n].to(engine.device))
            row.parity = max_abs_diff(out, refs.get(n))
            row.ms_per_batch = time_engine(engine, x, repeats, warmup)
        except Exception as exc:  # noqa: BLE001 - one failing size (e.g. out of memory) is one table row
            row.note = f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        rows.append(row)
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[Row]) -> str:
    """Markdown table: parity error and throughput per network/backend/precision/batch."""
    head = ("| network | backend | precision | device | batch | parity max abs diff | ms/batch | ms/item "
            "| items/s | note |\n|---|---|---|---|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r.network} | {r.backend} | {r.precision} | {r.device} | {r.batch} | {_fmt(r.parity, '.2e')} "
            f"| {_fmt(r.ms_per_batch, '.1f')} | {_fmt(r.ms_per_item, '.1f')} | {_fmt(r.items_per_s, '.2f')} "
            f"| {r.note} |"
        )
    return "\n".join(lines)


def weights_label(path: str | Path) -> str:
    return Path(path).name
