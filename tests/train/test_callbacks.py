from __future__ import annotations

import importlib.util
import io
import json

import pytest

from torchvat.train import Callback, JSONLogger, ProgressBar, TensorBoardLogger, Trainer


class Tape(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, **kwargs):
        self.calls.append(("train_begin", kwargs["trainer"].step))

    def on_step_begin(self, **kwargs):
        self.calls.append(("step_begin", kwargs["step"]))

    def on_eval_end(self, **kwargs):
        self.calls.append(("eval_end", kwargs["step"]))

    def on_step_end(self, **kwargs):
        self.calls.append(("step_end", kwargs["step"]))

    def on_train_end(self, **kwargs):
        self.calls.append(("train_end", kwargs["result"].steps))


def test_callbacks_called_in_order(moons, mlp, tiny):
    tape = Tape()
    Trainer(mlp(), moons, method="vat", callbacks=[tape], **tiny(iterations=4, eval_every=2)).fit()
    assert tape.calls == [
        ("train_begin", 0),
        ("step_begin", 0),
        ("step_end", 1),
        ("step_begin", 1),
        ("eval_end", 2),
        ("step_end", 2),
        ("step_begin", 2),
        ("step_end", 3),
        ("step_begin", 3),
        ("eval_end", 4),
        ("step_end", 4),
        ("train_end", 4),
    ]


def test_callbacks_called_in_list_order_with_kwargs(moons, mlp, tiny):
    order = []

    class Named(Callback):
        def __init__(self, name):
            self.name = name

        def on_step_end(self, **kwargs):
            assert {"trainer", "step", "metrics", "logs", "evaluated"} <= set(kwargs)
            order.append(self.name)

    Trainer(mlp(), moons, method="supervised", callbacks=[Named("a"), Named("b")], **tiny(iterations=2)).fit()
    assert order == ["a", "b", "a", "b"]


def test_base_callback_hooks_accept_anything():
    cb = Callback()
    for hook in ("on_train_begin", "on_step_begin", "on_eval_end", "on_step_end", "on_train_end", "on_exception"):
        assert getattr(cb, hook)(trainer=None, anything=1) is None


def test_metrics_jsonl_lines_parse(moons, mlp, tiny, tmp_path):
    result = Trainer(mlp(), moons, method="vat+ent", **tiny(out_dir=str(tmp_path))).fit()
    path = tmp_path / "metrics.jsonl"
    assert result.paths["metrics"] == str(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10, 12]
    assert [r["step"] for r in evals] == [4, 8, 12]
    assert {"ce", "vat", "ent", "loss", "acc"} <= set(train[0])
    assert evals[-1]["test_error"] == result.final["test_error"]
    # train means over a log window are means of the per-step terms
    assert all(0.0 <= r["acc"] <= 1.0 for r in train)


def test_metrics_jsonl_appends_on_resume(moons, mlp, tiny, tmp_path):
    class StopAt(Callback):
        def on_step_end(self, **kwargs):
            if kwargs["step"] == 6:
                kwargs["trainer"].should_stop = True

    options = tiny(out_dir=str(tmp_path))
    Trainer(mlp(), moons, method="vat", callbacks=[StopAt()], **options).fit()
    Trainer(mlp(), moons, method="vat", **options).fit(resume=str(tmp_path / "last.pt"))
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_json_logger_needs_a_path(moons, mlp, tiny):
    with pytest.raises(ValueError, match=r"JSONLogger needs a path or a trainer with config\.out_dir"):
        Trainer(mlp(), moons, callbacks=[JSONLogger()], **tiny()).fit()


def test_progress_bar_shows_live_numbers(moons, mlp, tiny, monkeypatch):
    import tqdm.auto

    stream = io.StringIO()
    real = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: real(*a, file=stream, mininterval=0, **k))
    bar = ProgressBar(force=True)
    Trainer(mlp(), moons, method="vat", callbacks=[bar], **tiny(iterations=4, log_every=1)).fit()
    text = stream.getvalue()
    assert "4/4" in text and "loss=" in text and "acc=" in text and "test_err=" in text
    assert bar.bar is None  # closed


def test_progress_bar_off_without_terminal_or_when_disabled(moons, mlp, tiny, monkeypatch):
    import sys

    trainer = Trainer(mlp(), moons, **tiny(iterations=2))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = ProgressBar(enabled=True)
    bar.on_train_begin(trainer=trainer)
    assert bar.bar is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    off = ProgressBar(enabled=False)
    off.on_train_begin(trainer=trainer)
    assert off.bar is None
    assert not any(isinstance(cb, ProgressBar) and cb.enabled for cb in trainer.callbacks)


def test_tensorboard_logger_writes_events(moons, mlp, tiny, tmp_path):
    trainer = Trainer(mlp(), moons, method="vat", **tiny(iterations=4, out_dir=str(tmp_path), tensorboard=True))
    assert any(isinstance(cb, TensorBoardLogger) for cb in trainer.callbacks)
    if importlib.util.find_spec("tensorboard") is None:  # the optional extra is missing
        with pytest.raises(ImportError, match=r"pip install 'torchvat\[tensorboard\]'"):
            trainer.fit()
        return
    result = trainer.fit()
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert result.paths["tensorboard"] == str(tmp_path / "tensorboard")
    assert files and files[0].stat().st_size > 0


def test_a_new_run_in_a_used_out_dir_starts_metrics_jsonl_afresh(moons, mlp, tiny, tmp_path, monkeypatch):
    import torchvat.train.callbacks as callbacks_module

    options = tiny(out_dir=str(tmp_path), eval_every=2, log_every=2)
    Trainer(mlp(), moons, method="vat", **{**options, "iterations": 6}).fit()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 6
    writes = []
    real = callbacks_module.write_text_atomic

    def recorded(path, text):
        writes.append((path.name, text))
        return real(path, text)

    monkeypatch.setattr(callbacks_module, "write_text_atomic", recorded)
    Trainer(mlp(), moons, method="vat", **{**options, "iterations": 4}).fit()
    assert writes == [("metrics.jsonl", "")]  # replaced atomically, not truncated in place
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("eval", 2), ("train", 2), ("eval", 4), ("train", 4)]
