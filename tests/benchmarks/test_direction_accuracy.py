"""The TF32 emulation of the direction-accuracy benchmark (no timing assertions)."""

import torch
from torch import nn

from ._bench import load as _load

direction_accuracy = _load("direction_accuracy")


def test_round_tf32_keeps_ten_mantissa_bits():
    x = torch.tensor([1 + 2**-10, 1 + 2**-12, 1 + 3 * 2**-12, -(1 + 2**-10), 3.0e38, 0.0])
    got = direction_accuracy.round_tf32(x)
    assert got.tolist()[:4] == [1 + 2**-10, 1.0, 1 + 2**-10, -(1 + 2**-10)]
    assert got[5] == 0 and torch.isfinite(got[4])
    r = direction_accuracy.round_tf32(torch.randn(1000))
    bits = r.view(torch.int32) & 0x1FFF
    assert bool((bits == 0).all())


def test_tf32_model_rounds_forward_backward_and_tangents():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    tf = direction_accuracy.tf32_emulated(model)
    x = torch.randn(2, 3, 6, 6)
    a, b = model(x), tf(x)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    d = torch.randn_like(x)
    _, jd = torch.func.jvp(tf, (x,), (d,))
    _, jd_ref = torch.func.jvp(model, (x,), (d,))
    torch.testing.assert_close(jd, jd_ref, rtol=2e-2, atol=2e-2)


def test_one_step_table_has_every_model_and_probe():
    rows = direction_accuracy.one_step_table(samples=2)
    assert len(rows) == 2 + 6
    assert all(row.count("/") == 3 for row in rows[2:])
    exact_mlp = next(r for r in rows if r.startswith("| MLP") and "exact" in r)
    assert exact_mlp.split("|")[3].strip().startswith("1.000")  # float32 exact product = the float64 one
