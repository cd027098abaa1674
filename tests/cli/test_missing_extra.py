"""``torchvat`` without its [cli] extra says which extra to install, in one line, before anything runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _cli_without(module: str, args: list[str], cwd) -> subprocess.CompletedProcess[str]:
    code = f"""
        import sys
        sys.modules[{module!r}] = None
        from torchvat.cli import main
        sys.exit(main({args!r}))
        """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.parametrize(("module", "distribution"), [("matplotlib", "matplotlib"), ("PIL", "Pillow")])
def test_train_without_the_cli_extra_names_it_before_training(tmp_path, module, distribution):
    out = tmp_path / "run"
    result = _cli_without(module, ["train", "--iters", "3", "--no-progress", "--out", str(out)], tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"torchvat: error: the torchvat command needs {distribution}, which is not installed: "
        "pip install 'torchvat[cli]'"
    ]
    assert "Traceback" not in result.stderr and not out.exists()


def test_env_runs_without_the_cli_extra(tmp_path):
    result = _cli_without("matplotlib", ["env"], tmp_path)
    assert result.returncode == 0, result.stderr
