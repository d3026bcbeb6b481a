from __future__ import annotations

from pathlib import Path

import pytest

import durable
from helpers import make_app


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


@pytest.fixture
def app(db: str) -> durable.App:
    return make_app(db)
