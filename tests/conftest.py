"""Shared fixtures (the kit itself lives in jobkit.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from jobkit import JobDir  # noqa: E402


@pytest.fixture
def jobdir(tmp_path: Path) -> JobDir:
    return JobDir(tmp_path)
