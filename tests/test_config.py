"""Configuration loading: defaults, user files, overrides, and the configs shipped with the project."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftcn.config import deep_merge, default_config, load_config, model_threshold
from ftcn.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_threshold_is_the_official_one() -> None:
    cfg = default_config()
    assert model_threshold(cfg) == pytest.approx(0.002584857167676091)
    assert model_threshold(cfg, "my_finetune") == cfg["model"]["default_threshold"]


def test_user_file_and_overrides_merge_deeply(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("detector:\n  max_size: 960\nmodel:\n  thresholds:\n    mine: 0.4\n")
    cfg = load_config(user, {"detector": {"batch_size": 2}})
    assert cfg["detector"]["max_size"] == 960 and cfg["detector"]["batch_size"] == 2
    assert cfg["detector"]["nms_threshold"] == 0.4  # untouched defaults survive
    assert cfg["model"]["thresholds"]["ftcn_tt"] == pytest.approx(0.002584857167676091)
    assert model_threshold(cfg, "mine") == 0.4
    base = {"a": {"b": 1}}
    assert deep_merge(base, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}}


@pytest.mark.parametrize("text", ["a: [unclosed", "- just\n- a list\n"])
def test_bad_config_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "default.yaml"))
def test_shipped_configs_only_use_known_keys(name: str) -> None:
    """docker-*.yaml override existing settings only (a typo would silently do nothing)."""
    from engines.base import BACKENDS

    defaults = default_config()

    def check(over: dict, base: dict, path: str) -> None:
        for key, value in over.items():
            assert key in base, f"{name}: unknown key {path}{key}"
            if isinstance(value, dict) and isinstance(base[key], dict):
                check(value, base[key], f"{path}{key}.")

    import yaml

    over = yaml.safe_load((CONFIGS / name).read_text())
    check(over, defaults, "")
    cfg = load_config(CONFIGS / name)
    assert cfg["engine"]["backend"] in (*BACKENDS, "auto")
