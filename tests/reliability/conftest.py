"""Fixtures of the reliability tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._helpers import TRAIN_ARGS, Moons, run_cli


@pytest.fixture(scope="session")
def moons() -> Moons:
    return Moons()


@pytest.fixture(scope="session")
def uninterrupted_cli_run(tmp_path_factory) -> Path:
    """The reference: ``TRAIN_ARGS`` run to the end without interruption."""
    base = tmp_path_factory.mktemp("reference")
    done = run_cli([*TRAIN_ARGS, "--out", "run"], base)
    assert done.returncode == 0, done.stderr
    return base / "run"
