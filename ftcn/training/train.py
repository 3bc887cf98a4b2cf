"""The fine-tuning loop: BCE on the logit, Adam, AMP on CUDA, optional frozen backbone, DDP.

Single process on CPU or one GPU; under `torchrun --nproc_per_node N` one process per GPU (nccl) or
per CPU worker (gloo), with a DistributedSampler. The best epoch is saved in the official checkpoint
format (`best.pth`, loadable by `load_ftcn`, `analyze` and the official code); `train_state.pt`
holds what `--resume` needs (model, optimizer, scaler, epoch, history).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from ftcn.checkpoint import check_state_dict, read_state_dict, save_official
from ftcn.errors import ConfigError, InputError
from ftcn.model import FTCN, normalize_clips
from ftcn.training import distributed as D
from ftcn.training import layout
from ftcn.training.augment import ClipAugment
from ftcn.training.dataset import ClipDataset, split_by_csv, stratified_split
from ftcn.training.evaluate import (
    ClipPredictions,
    LogitModel,
    calibrate,
    predict_clips,
    summarize,
    write_threshold,
)
from ftcn.training.plots import plot_curves

log = logging.getLogger(__name__)

HEAD_PREFIX = "resnet.head."
STATE_FILE = "train_state.pt"


@dataclass
class TrainOptions:
    data: Path
    out: Path
    pretrained: Path | None = None
    from_scratch: bool = False
    split_csv: Path | None = None
    freeze: bool = False
    epochs: int = 5
    batch_size: int = 4
    lr: float = 1e-5
    weight_decay: float = 0.0
    seed: int = 0
    max_steps: int | None = None
    resume: Path | None = None
    device: str = "cpu"
    num_workers: int = 0
    val_fraction: float = 0.2
    amp: bool = True
    freeze_bn_stats: bool = True
    grad_clip: float | None = None
    model_id: str = "ftcn_tt_finetuned"
    augment: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


def freeze_backbone(model: FTCN) -> None:
    """Only the transformer head (`resnet.head`) keeps requires_grad."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(HEAD_PREFIX)


def set_train_mode(model: FTCN, freeze: bool, freeze_bn_stats: bool) -> None:
    """train() for what learns; eval() for a frozen backbone (its BatchNorm must keep its running
    statistics and use them) and, with freeze_bn_stats, for every BatchNorm (small fine-tuning batches
    give poor batch statistics)."""
    model.train()
    if freeze:
        for name, module in model.resnet.named_children():
            if name != "head":
                module.eval()
    if freeze_bn_stats:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def build_model(cfg: dict[str, Any], opts: TrainOptions) -> tuple[FTCN, str]:
    """FTCN initialised from the pretrained checkpoint (strict), or random with --from-scratch."""
    model = FTCN()
    if opts.from_scratch or opts.resume is not None:  # a resumed run loads its own state next
        return model, "random"
    path = opts.pretrained
    if path is None:
        from ftcn.weights import resolve_checkpoint

        path = resolve_checkpoint(cfg)
    state = read_state_dict(path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    return model, str(path)


def _splits(opts: TrainOptions, records: list[layout.ClipRecord]) -> dict[str, list[layout.ClipRecord]]:
    if opts.split_csv is not None:
        return split_by_csv(records, opts.split_csv)
    return stratified_split(records, opts.val_fraction, opts.seed)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _write_metrics(out: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    keys = ["epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "val_video_acc", "val_auc", "lr",
            "seconds"]
    with (out / "metrics.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for h in history:
            w.writerow(h)
    (out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
    plot_curves(history, out / "curves.png")


def _is_better(cand: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Higher video AUC wins, then lower validation loss; without validation the latest epoch wins."""
    if best is None:
        return True
    if cand.get("val_loss") is None:
        return True
    ca, ba = cand.get("val_auc"), best.get("val_auc")
    if ca is not None and ba is not None and ca != ba:
        return ca > ba
    if (ca is None) != (ba is None):
        return ca is not None
    return cand["val_loss"] < (best.get("val_loss") if best.get("val_loss") is not None else math.inf)


def train(cfg: dict[str, Any], opts: TrainOptions) -> dict[str, Any]:
    """Run the whole training; returns the summary also written to metrics.json (on rank 0)."""
    dist = D.setup(opts.device)
    try:
        return _train(cfg, opts, dist)
    finally:
        D.cleanup(dist)


def _train(cfg: dict[str, Any], opts: TrainOptions, dist: D.DistInfo) -> dict[str, Any]:
    device = dist.device
    out = Path(opts.out)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    _seed_all(opts.seed + dist.rank)  # different augmentation per rank; DDP syncs the weights

    records = layout.read_index(opts.data)
    if not records:
        raise InputError(f"{opts.data}: no clips in the manifest")
    splits = _splits(opts, records)
    if not splits["train"]:
        raise InputError("the training split is empty (check --split or the data)")
    if len({r.label for r in splits["train"]}) < 2 and dist.is_main:
        log.warning("the training split holds only one class")
    if not splits["val"] and dist.is_main:
        log.warning("no validation videos: no AUC per epoch, best.pth is the last epoch")
    augment = ClipAugment.from_config(opts.augment)
    train_ds = ClipDataset(opts.data, splits["train"], transform=augment)
    val_ds = ClipDataset(opts.data, splits["val"]) if splits["val"] else None

    model, init_from = build_model(cfg, opts)
    if opts.freeze:
        freeze_backbone(model)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=opts.lr, weight_decay=opts.weight_decay)
    use_amp = bool(opts.amp) and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, step, history, best = 0, 0, [], None
    if opts.resume is not None:
        state = torch.load(opts.resume, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"], strict=True)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:
            raise ConfigError(f"{opts.resume}: optimizer state does not match (was --freeze the same?): {exc}") from None
        scaler.load_state_dict(state["scaler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history, best = list(state["history"]), state.get("best")
        init_from = f"resume:{opts.resume}"

    wrapped: nn.Module = LogitModel(model)
    if dist.enabled:
        wrapped = DistributedDataParallel(wrapped, device_ids=[dist.local_rank] if device.startswith("cuda") else None)

    sampler = DistributedSampler(train_ds, dist.world_size, dist.rank, shuffle=True, seed=opts.seed) \
        if dist.enabled else None
    gen = torch.Generator().manual_seed(opts.seed)
    pin = device.startswith("cuda")
    train_loader = DataLoader(train_ds, batch_size=opts.batch_size, shuffle=sampler is None, sampler=sampler,
                              num_workers=opts.num_workers, pin_memory=pin, generator=gen,
                              persistent_workers=opts.num_workers > 0)
    val_loader = None
    if val_ds is not None:
        shard = Subset(val_ds, list(range(dist.rank, len(val_ds), dist.world_size)))
        val_loader = DataLoader(shard, batch_size=opts.batch_size, shuffle=False, num_workers=opts.num_workers,
                                pin_memory=pin)

    summary: dict[str, Any] = {
        "init_from": init_from, "device": device, "world_size": dist.world_size, "amp": use_amp,
        "freeze": opts.freeze, "trainable_parameters": sum(p.numel() for p in trainable),
        "train_clips": len(train_ds), "train_videos": len(train_ds.video_ids),
        "val_clips": len(val_ds) if val_ds else 0, "val_videos": len(val_ds.video_ids) if val_ds else 0,
        "model_id": opts.model_id, "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
    }
    steps_log: list[dict[str, Any]] = []
    stop = False
    for epoch in range(start_epoch, opts.epochs):
        if stop:
            break
        t0 = time.perf_counter()
        if sampler is not None:
            sampler.set_epoch(epoch)
        set_train_mode(model, opts.freeze, opts.freeze_bn_stats)
        loss_sum = correct = seen = 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{opts.epochs}", unit="batch",
                   disable=not (opts.progress and dist.is_main), leave=False)
        for clips, labels, _ in bar:
            x = normalize_clips(clips.to(device, non_blocking=True))
            y = labels.to(device).float()
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = wrapped(x)[:, 0]
            # BCE on the logit, in float32: numerically stable, never on a sigmoided output.
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if opts.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, opts.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            n = float(y.numel())
            loss_sum += float(loss.detach()) * n
            correct += float(((logits.detach() > 0).float() == y).sum())
            seen += n
            steps_log.append({"step": step, "epoch": epoch + 1, "loss": float(loss.detach())})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if opts.max_steps is not None and step >= opts.max_steps:
                stop = True
                break
        bar.close()
        loss_sum, correct, seen = D.all_reduce_sum(dist, [loss_sum, correct, seen])
        row: dict[str, Any] = {
            "epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
        }
        val = None
        if val_loader is not None:
            model.eval()
            local = predict_clips(wrapped.module if dist.enabled else wrapped, val_loader, device, use_amp)
            preds = ClipPredictions([], [], [], [])
            for part in D.gather_objects(dist, local):
                preds.extend(part)
            val = summarize(preds, val_ds, 0.5)
            row.update(val_loss=val["loss"], val_acc=val["clip_acc"], val_video_acc=val["video_acc"], val_auc=val["auc"])
        row["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(row)
        improved = _is_better(row, best)
        if improved:
            best = dict(row)
            if val is not None:
                best["val_video_scores"] = val["video_scores"]
                best["val_video_labels"] = val["video_labels"]
        if dist.is_main:
            if improved:
                save_official(model, out / "best.pth")
            save_official(model, out / "last.pth")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": epoch + 1, "step": step, "history": history,
                        "best": best, "freeze": opts.freeze}, out / STATE_FILE)
            summary.update(best=best, steps=steps_log)
            _write_metrics(out, history, summary)
            log.info("epoch %d: %s", epoch + 1, {k: v for k, v in row.items() if k != "epoch"})
        D.barrier(dist)

    if dist.is_main:
        summary["outputs"] = {"best": str(out / "best.pth"), "last": str(out / "last.pth"),
                              "state": str(out / STATE_FILE), "metrics": str(out / "metrics.json"),
                              "curves": str(out / "curves.png")}
        summary["config"] = str(_write_model_config(out, opts.model_id, best))
        summary.update(best=best, steps=steps_log)
        _write_metrics(out, history, summary)
    summary["param_checksum"] = param_checksum(model)
    return summary


def _write_model_config(out: Path, model_id: str, best: dict[str, Any] | None) -> Path:
    """config.yaml pointing `analyze` at best.pth, with a Youden threshold from validation when possible."""
    extra = {"checkpoint": str((out / "best.pth").resolve()), "id": model_id}
    threshold = 0.5
    if best and best.get("val_video_scores"):
        labels = np.array([best["val_video_labels"][v] for v in best["val_video_scores"]], dtype=float)
        scores = np.array(list(best["val_video_scores"].values()), dtype=float)
        if len(set(labels.tolist())) == 2:
            threshold = calibrate(labels, scores)
    return write_threshold(out / "config.yaml", model_id, threshold, extra)


def param_checksum(model: nn.Module) -> dict[str, str]:
    """sha256 of the bytes of all parameters, and of the head's: identical on every DDP rank."""
    h_all, h_head = hashlib.sha256(), hashlib.sha256()
    for name, p in model.named_parameters():
        b = p.detach().cpu().contiguous().numpy().tobytes()
        h_all.update(b)
        if name.startswith(HEAD_PREFIX):
            h_head.update(b)
    return {"all": h_all.hexdigest(), "head": h_head.hexdigest()}
