"""Smoke test of the robustness benchmark at a tiny budget (no timing assertions)."""

from ._bench import load as _load

robustness = _load("robustness")


def test_tiny_run_prints_the_table_and_flags_masking(capsys):
    args = ["--datasets", "digits", "--methods", "supervised,pgd-at", "--iters", "5", "--train-steps", "2"]
    result = robustness.main([*args, "--pgd-steps", "3", "--n-eval", "40"])
    rows = result["rows"]
    assert [(r.dataset, r.method, r.iterations, r.n_eval) for r in rows] == [
        ("digits", "supervised", 5, 40),
        ("digits", "pgd-at", 5, 40),
    ]
    for r in rows:
        assert 0.0 <= r.pgd_l2 <= r.clean <= 1.0 and 0.0 <= r.pgd_linf <= r.clean and r.train_s > 0
    out = capsys.readouterr().out
    assert "| PGD-3 L-inf % | PGD-3 L2 % |" in out and "| digits | pgd-at | 5 | 1 (0.125) |" in out


def test_masking_flag_is_fgsm_far_above_pgd():
    row = robustness.Row("digits", "at", 1, 1.0, 10, clean=0.9, fgsm=0.8, pgd_linf=0.6, pgd_l2=0.5, train_s=1.0)
    assert row.masking(10.0) and not row.masking(25.0)
