"""The integrations are leaves: module-level classes, re-exported lazily, never imported by ``import torchvat``."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (this one has transformers and lightning loaded by now)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)


def test_import_torchvat_imports_neither_framework():
    code = (
        "import sys, torchvat, torchvat.integrations, torchvat.integrations.hf\n"
        "loaded = sorted({'transformers', 'lightning', 'pytorch_lightning'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
        "from torchvat.integrations import VATArguments, hf_vat_loss\n"
        "assert 'transformers' not in sys.modules, 'VATArguments and the losses need no transformers'\n"
        "from torchvat.integrations import VATTrainer\n"
        "assert 'transformers' in sys.modules and 'lightning' not in sys.modules\n"
        "from torchvat.integrations import VATModule\n"
        "assert 'lightning' in sys.modules\n"
    )
    proc = run_fresh(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("name", "module"),
    [("VATTrainer", "torchvat.integrations.hf.trainer"), ("VATModule", "torchvat.integrations.lightning")],
)
def test_classes_are_module_level_in_the_module_importing_their_framework(name, module):
    cls = getattr(importlib.import_module("torchvat.integrations"), name)
    defining = importlib.import_module(module)
    assert cls.__module__ == module and cls.__qualname__ == name
    assert vars(defining)[name] is cls  # defined by the module's code, not built by a function on access
    source = inspect.getsource(cls)
    assert source.startswith(f"class {name}(")
    assert inspect.getsourcefile(cls) == inspect.getsourcefile(defining)


def test_lazy_re_exports_are_the_same_objects():
    import torchvat.integrations as integrations
    import torchvat.integrations.hf as hf
    import torchvat.integrations.lightning as lightning

    assert integrations.VATTrainer is hf.VATTrainer
    assert integrations.VATArguments is hf.VATArguments
    assert integrations.hf_vat_loss is hf.hf_vat_loss
    assert integrations.VATModule is lightning.VATModule
    assert integrations.vat_module is lightning.vat_module
    assert set(integrations.__all__) == set(integrations._EXPORTS)
    assert set(integrations.__all__) <= set(dir(integrations))
    assert "VATTrainer" in dir(hf)
    with pytest.raises(AttributeError, match="has no attribute 'VATTrainerr'"):
        integrations.VATTrainerr  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        hf.nothing  # noqa: B018


def test_vat_module_factory_still_builds_a_vat_module():
    from torch import nn

    from torchvat.integrations.lightning import VATModule, vat_module

    module = vat_module(nn.Linear(2, 2), "vat", eps=0.5)
    assert type(module) is VATModule and module.method.eps == 0.5
