from __future__ import annotations

import pytest
import torch

from torchvat.report import (
    DPI,
    Report,
    markdown_table,
    plot_comparison,
    plot_decision_boundaries,
    plot_learning_curves,
    plot_perturbation_grid,
    plot_robustness,
    read_metrics,
    text_table,
)


def test_decision_boundaries_binary_and_multiclass(tmp_path, png_size):
    torch.manual_seed(0)
    x = torch.randn(30, 2)
    y = torch.arange(30) % 3
    models = {"a": torch.nn.Linear(2, 2), "b": torch.nn.Linear(2, 3)}
    p = plot_decision_boundaries(
        models, tmp_path / "b.png", x_labeled=x[:6], y_labeled=y[:6] % 2, x_unlabeled=x, resolution=30
    )
    assert png_size(p) == (round(2 * 4.6 * DPI), round(4.8 * DPI))
    with pytest.raises(ValueError, match="x_labeled must have shape"):
        plot_decision_boundaries(models, tmp_path / "c.png", x_labeled=torch.randn(3, 3), y_labeled=torch.zeros(3))
    with pytest.raises(ValueError, match="at least one model"):
        plot_decision_boundaries({}, tmp_path / "d.png", x_labeled=x, y_labeled=y)


def test_learning_curves_and_comparison(tmp_path, png_size):
    hist = [{"step": s, "test_error": 1 / s, "train_loss": 1 / s**2} for s in (1, 2, 4)]
    assert png_size(plot_learning_curves({"vat": hist, "at": hist}, tmp_path / "c.png")) == (11 * DPI, round(4.2 * DPI))
    p = plot_comparison({"supervised": [0.2, 0.1], "vat": [0.01]}, tmp_path / "bar.png")
    assert png_size(p)[1] == round(4.2 * DPI)
    with pytest.raises(ValueError, match=r"results\['vat'\] must hold at least one value"):
        plot_comparison({"vat": []}, tmp_path / "x.png")


def test_robustness_and_grid(tmp_path, png_size):
    assert png_size(plot_robustness([0, 1, 2], {"noise": [1, 0.9, 0.5]}, tmp_path / "r.png", train_eps=1.0)) == (
        7 * DPI,
        round(4.5 * DPI),
    )
    with pytest.raises(ValueError, match="must have 2 values like eps"):
        plot_robustness([0, 1], {"noise": [1.0]}, tmp_path / "r2.png")
    x = torch.rand(2, 3, 8, 8)
    r = 0.05 * torch.randn_like(x)
    p = plot_perturbation_grid(
        x,
        r,
        tmp_path / "g.png",
        pred_before=[0, 1],
        prob_before=[0.9, 0.8],
        pred_after=[1, 1],
        prob_after=[0.6, 0.7],
        labels=[0, 1],
        class_names=["cat", "dog"],
    )
    assert png_size(p) == (round(7.8 * DPI), round((2.3 * 2 + 0.6) * DPI))
    with pytest.raises(ValueError, match="r must have the shape of x"):
        plot_perturbation_grid(
            x, r[:1], tmp_path / "g2.png", pred_before=[0], prob_before=[1.0], pred_after=[0], prob_after=[1.0]
        )


def test_tables_and_report(tmp_path):
    assert text_table(["m", "e"], [["vat", 0.5]]).splitlines()[2] == "vat  0.5"
    assert markdown_table(["a"], [[1]]).splitlines()[1] == "|---:|"
    with pytest.raises(ValueError, match=r"rows\[0\] must have 2 cells"):
        text_table(["a", "b"], [[1]])
    (tmp_path / "fig.png").write_bytes(b"")
    rep = Report("T")
    rep.heading("H")
    rep.figure(tmp_path / "fig.png", "cap")
    path = rep.write(tmp_path)
    text = path.read_text()
    assert text.startswith("# T\n") and "![cap](fig.png)" in text and "## H" in text


def test_read_metrics_latest_record_wins(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(
        '{"kind": "eval", "step": 2, "e": 1}\n{"kind": "train", "step": 2}\n{"kind": "eval", "step": 2, "e": 3}\n'
        '{"kind": "eval", "step": 1, "e": 0}\n'
    )
    assert read_metrics(p) == [{"step": 1, "e": 0}, {"step": 2, "e": 3}]
    with pytest.raises(FileNotFoundError, match="metrics file not found"):
        read_metrics(tmp_path / "none.jsonl")


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "eval", "step": 10, "test_error": 0.2}\n{"kind": "eval", "step": 20, "test_err')
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert read_metrics(path) == [{"step": 10, "test_error": 0.2}]
    path.write_text('{"kind": "eval", "step": 10\n{"kind": "eval", "step": 20, "test_error": 0.1}\n')
    with pytest.raises(ValueError, match="line 1: not JSON"):  # damage in the middle is an error
        read_metrics(path)


def test_numpy_numbers_are_formatted_and_right_aligned_and_pipes_escaped():
    import numpy as np

    from torchvat.report.document import format_cell, markdown_table

    assert format_cell(np.float32(0.123456)) == "0.1235" and format_cell(np.int64(7)) == "7"
    table = markdown_table(["rate|s", "error"], [["vat", np.float32(0.5)], ["at", np.float64(0.25)]])
    assert table.splitlines()[:2] == ["| rate\\|s | error |", "|---|---:|"]


LONG = "vat+ent on a-dataset-with-a-long-name: test accuracy under perturbation, 4000 labels (n = 2000)"


@pytest.fixture
def laid_out(monkeypatch):
    """Each figure's title boxes, legend boxes and width (display pixels), measured as it is saved."""
    import torchvat.report.figures as figures

    seen = []
    save = figures._save

    def measure(fig, path):
        fig.draw_without_rendering()
        renderer = fig.canvas.get_renderer()
        titles = [t for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None and t.get_text()]
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        seen.append(
            {
                "width": fig.bbox.width,
                "titles": [(t.get_text(), t.get_window_extent(renderer)) for t in titles],
                "legends": [leg.get_window_extent(renderer) for leg in legends],
            }
        )
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", measure)
    return seen


def _assert_titles_clear(figure, title):
    texts = [text for text, _ in figure["titles"]]
    assert any(text.replace("\n", " ") == title for text in texts), texts  # wrapped, not cut
    for text, box in figure["titles"]:
        assert box.x0 >= 0 and box.x1 <= figure["width"], (
            f"{text!r} is clipped: {box} in a {figure['width']} wide figure"
        )
        for legend in figure["legends"]:
            assert not box.overlaps(legend), f"{text!r} runs under the legend"


def test_long_titles_are_wrapped_inside_the_figure_and_clear_of_the_legend(tmp_path, laid_out, png_size):
    curves = {"random noise": [0.9, 0.8], "L2 adversarial": [0.9, 0.5], "virtual adversarial": [0.9, 0.7]}
    plot_robustness([0, 1], curves, tmp_path / "r.png", title=LONG, train_eps=4.19)
    x = torch.rand(2, 3, 8, 8)
    grid_title = f"{LONG}: L2 adversarial perturbation, eps = 42.4 (val examples, shown as pixels (inverse ZCA))"
    grid = {"pred_before": [0, 1], "prob_before": [0.9, 0.8], "pred_after": [1, 1], "prob_after": [0.6, 0.7]}
    plot_perturbation_grid(x, 0.05 * x, tmp_path / "g.png", title=grid_title, **grid)
    plot_comparison({"supervised": [0.2, 0.1], "vat": [0.01, 0.02]}, tmp_path / "c.png", title=LONG)
    hist = [{"step": s, "test_error": 1 / s, "train_loss": 1 / s} for s in (1, 2)]
    plot_learning_curves({"vat": hist}, tmp_path / "l.png", title=LONG + " " + LONG)
    for figure, title in zip(laid_out, [LONG, grid_title, LONG, LONG + " " + LONG], strict=True):
        _assert_titles_clear(figure, title)
    assert laid_out[0]["titles"][0][0].count("\n") >= 1  # the robustness title needed two lines
    assert png_size(tmp_path / "r.png") == (7 * DPI, round(4.5 * DPI))  # the figure keeps its size


def test_each_perturbation_panel_is_scaled_to_its_own_range_and_says_so(tmp_path, monkeypatch):
    """A perturbation far smaller than the image (and than another row's) fills its panel's color scale."""
    import numpy as np

    import torchvat.report.figures as figures

    shown = []
    save = figures._save

    def capture(fig, path):
        shown.append(fig)
        return save(fig, path)

    monkeypatch.setattr(figures, "_save", capture)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 6, generator=gen)
    r = torch.randn(2, 3, 6, 6, generator=gen)
    r[0] *= 1e-4  # 10000 times smaller than row 1's
    r[1, 1] = -r[1, 0]  # channels that cancel in a mean over them
    r[1, 2] = 0
    common = dict(pred_before=[0, 1], prob_before=[0.9, 0.8], pred_after=[1, 1], prob_after=[0.6, 0.7])
    plot_perturbation_grid(x, r, tmp_path / "g.png", **common)
    axes = shown[0].axes
    for row in range(2):
        panel = axes[3 * row + 1]
        img = np.asarray(panel.images[0].get_array())
        assert img.shape == (6, 6, 3)  # in color, not a channel mean
        assert img.min() == pytest.approx(0.0, abs=1e-6) or img.max() == pytest.approx(1.0, abs=1e-6)
        assert img.max() - img.min() > 0.5  # visible, not nearly blank
        limit = float(r[row].abs().max())
        assert panel.get_title().startswith(f"perturbation (own range ±{limit:.2g})")
    # with magnify, one factor for every row (and the title gives it)
    shown.clear()
    plot_perturbation_grid(x, r, tmp_path / "g2.png", magnify=2.0, **common)
    assert shown[0].axes[1].get_title().startswith("perturbation (×2)")
    assert np.ptp(np.asarray(shown[0].axes[1].images[0].get_array())) < 0.01  # row 0 is tiny at that factor
