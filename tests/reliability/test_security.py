"""Nothing loaded is executed; paths are used as given; nothing is written outside ``--out``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from torchvat.cli.main import main

SRC = Path(__file__).resolve().parents[2] / "src" / "torchvat"


def _sources() -> list[tuple[Path, str]]:
    return [(p, p.read_text(encoding="utf-8")) for p in sorted(SRC.rglob("*.py"))]


def test_sources_found():
    assert len(_sources()) > 30


def test_every_torch_load_is_weights_only():
    calls = [(p, m) for p, text in _sources() for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text)]
    assert calls, "torch.load is used somewhere (checkpoint loading)"
    for path, match in calls:
        assert "weights_only=True" in match.group(0), f"{path}: {match.group(0)}"


@pytest.mark.parametrize(
    "pattern",
    [
        r"\bpickle\.loads?\(",
        r"\byaml\.load\(",
        r"(?<![.\w])eval\(",
        r"(?<![.\w])exec\(",
        r"shell\s*=\s*True",
        r"os\.system\(",
    ],
)
def test_no_code_executing_loaders_or_shells(pattern):
    hits = [f"{p}:{text[: m.start()].count(chr(10)) + 1}" for p, text in _sources() for m in re.finditer(pattern, text)]
    assert hits == []


def test_numpy_files_refuse_pickles():
    text = (SRC / "data" / "files.py").read_text(encoding="utf-8")
    assert "allow_pickle=False" in text and "allow_pickle=True" not in text


def test_config_values_are_data_not_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.toml"
    config.write_text(f"[train]\nmethod = \"__import__('os').system('touch {marker}')\"\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "method must be one of" in capsys.readouterr().err
    assert not marker.exists()


def test_cli_writes_only_inside_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    before = set(tmp_path.rglob("*"))
    out = Path("elsewhere") / ".." / "a dir; rm -rf x"  # used as given: no shell, no expansion
    args = ["train", "--dataset", "moons", "--iters", "6", "--eval-every", "3", "--checkpoint-every", "2"]
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    created = set(tmp_path.rglob("*")) - before
    run = (tmp_path / "a dir; rm -rf x").resolve()
    assert created and all(p.resolve() == run or run in p.resolve().parents for p in created), created
    assert {"last.pt", "config.toml", "metrics.jsonl", "run.json"} <= {p.name for p in created}
