"""The install footprint: the losses need torch and numpy only; other parts name their extra."""

import subprocess
import sys
import textwrap

import pytest

#: the optional top-level packages, each made unimportable in the child interpreter
OPTIONAL = ("sklearn", "matplotlib", "tqdm", "PIL", "torchvision", "transformers", "lightning", "tensorboard")


def _run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in OPTIONAL)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_losses_work_with_torch_and_numpy_only():
    result = _run_without_extras(
        """
        import torch, torchvat
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        x = torch.randn(16, 3)
        assert torchvat.vat_loss(model, x, eps=1.0).item() >= 0
        assert torchvat.adversarial_loss(model, x, torch.zeros(16, dtype=torch.long), eps=1.0).item() >= 0
        import torchvat.train, torchvat.data, torchvat.models  # importable; what needs an extra says so when used
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    ("call", "names"),
    [
        ("from torchvat.data import load_digits_data; load_digits_data()", ("scikit-learn", "torchvat[cli]")),
        ("from torchvat.data import make_moons_data; make_moons_data()", ("scikit-learn", "torchvat[cli]")),
    ],
)
def test_a_missing_extra_is_named(call, names):
    result = _run_without_extras(
        f"""
        from torchvat._extras import MissingExtraError
        try:
            {call}
        except MissingExtraError as error:
            assert isinstance(error, ImportError)
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    for name in names:
        assert name in result.stdout


def test_require_does_not_rename_a_missing_dependency_of_an_installed_module(tmp_path, monkeypatch):
    from torchvat._extras import MissingExtraError, require

    (tmp_path / "pkg_with_a_broken_import.py").write_text("import a_module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("pkg_with_a_broken_import", extra="cli", feature="a test")
    assert not isinstance(info.value, MissingExtraError)
    assert info.value.name == "a_module_that_is_not_there"
