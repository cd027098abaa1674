"""Smoke and unit tests of the end-to-end benchmark (no timing assertions)."""

import time

import pytest
import torch

from ._bench import load as _load

end_to_end = _load("end_to_end")


def test_quick_run_splits_the_time(capsys):
    result = end_to_end.main(["--quick", "--methods", "vat"])
    (run,) = result["runs"]
    assert (run.dataset, run.method, run.iterations) == ("digits", "vat", 20)
    assert set(run.phases) == set(end_to_end.PHASES)
    assert run.phases["step"] > 0 and run.phases["data"] > 0 and run.phases["eval"] > 0
    assert sum(run.phases.values()) <= run.wall_s * 1.05 + 1e-3
    assert 0.0 <= run.test_error <= 1.0 and run.eps is not None and run.eps > 0
    assert run.host_reads_per_iter >= 0
    assert "| digits | vat | 20 |" in capsys.readouterr().out


def test_phase_timer_charges_exclusive_time():
    timer = end_to_end.PhaseTimer()
    inner = timer.wrap("data", lambda: time.sleep(0.02))

    def outer_body():
        inner()
        time.sleep(0.01)

    timer.wrap("step", outer_body)()
    assert timer.calls["data"] == 1 and timer.calls["step"] == 1
    assert timer.totals["data"] >= 0.02
    assert 0.01 <= timer.totals["step"] < 0.02  # the nested sleep is not charged twice


def test_host_read_counter_counts_only_when_active_and_restores():
    counter = end_to_end.HostReadCounter()
    original = torch.Tensor.item
    t = torch.tensor(2.0)
    with counter.patched():
        t.item()  # inactive: not counted
        counted = counter.wrap(lambda: (t.item(), bool(t > 1), float(t)))
        counted()
    assert counter.count == 3 and counter.where == {"item": 1, "__bool__": 1, "__float__": 1}
    assert torch.Tensor.item is original


def test_unknown_dataset_is_rejected():
    with pytest.raises(SystemExit, match="unknown data set 'nope'"):
        end_to_end.main(["--quick", "--datasets", "nope"])
