"""Configuration: the packaged default YAML, deep-merged with a user file and overrides."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ftcn.errors import ConfigError


def default_config() -> dict[str, Any]:
    """The packaged `configs/default.yaml` as a fresh dict."""
    text = resources.files("configs").joinpath("default.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` updated recursively with `override` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Default config, then the user's YAML file, then explicit overrides."""
    cfg = default_config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            user = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        cfg = deep_merge(cfg, user)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return cfg


def model_threshold(cfg: dict[str, Any], model_id: str | None = None) -> float:
    """The operating threshold of a checkpoint id (falls back to `default_threshold`)."""
    mid = model_id or cfg["model"]["id"]
    return float(cfg["model"].get("thresholds", {}).get(mid, cfg["model"]["default_threshold"]))


def resolve_device(name: str | None) -> str:
    """`auto` -> `cuda` when available, else `cpu`."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
