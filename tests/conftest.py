"""Shared test fixtures: where the read-only reference data lives.

The data (`fixtures/`, `weights/`, `videos/`) is never copied into the repo; tests
find it through FTCN_SHARED (set by .ci/run, default ../shared beside the repo)
and skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("FTCN_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "fixtures").is_dir():
        pytest.skip(f"shared reference data not found at {root} (set FTCN_SHARED)")
    return root


@pytest.fixture(scope="session")
def fixtures_dir(shared: Path) -> Path:
    return shared / "fixtures"


@pytest.fixture(scope="session")
def videos_dir(shared: Path) -> Path:
    return shared / "videos"


@pytest.fixture(scope="session")
def retinaface_weights(shared: Path) -> Path:
    p = shared / "weights" / "retinaface_mobilenet0.25.pth"
    if not p.is_file():
        pytest.skip(f"RetinaFace weights not found at {p}")
    return p


@pytest.fixture(scope="session")
def random_ckpt(fixtures_dir: Path) -> Path:
    return fixtures_dir / "ftcn_random_ckpt.pt"


@pytest.fixture(scope="session")
def sensitive_ckpt(fixtures_dir: Path) -> Path:
    return fixtures_dir / "ftcn_random_sensitive_ckpt.pt"
