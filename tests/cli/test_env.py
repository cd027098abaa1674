from __future__ import annotations

import platform

import torch

import torchvat
from torchvat.cli import main
from torchvat.cli.env import collect_env, format_env


def test_collect_env_versions_and_devices():
    info = collect_env()
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["python"] == platform.python_version()
    assert info["devices"][0] == "cpu"
    text = format_env(info)
    assert f"torchvat       {torchvat.__version__}" in text


def test_env_command(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert torch.__version__ in out and "devices" in out and "numpy" in out
