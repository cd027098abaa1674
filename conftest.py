"""Shared pytest setup: doctests see ``torch`` and ``nn``; tests run on two threads at most."""

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch
    doctest_namespace["nn"] = torch.nn
