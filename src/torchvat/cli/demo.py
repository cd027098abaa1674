"""``torchvat demo``: the three training modes on two moons with 8 labels, in well under a minute.

Normal (supervised) training, adversarial training and virtual adversarial training are
trained one after another on the two-moons set of the VAT paper with 8 labeled points and
1000 unlabeled ones, and a report folder shows their decision boundaries side by side,
their learning curves and a table of test errors. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchvat.cli._common import add_common_options, nonnegative_float, positive_int, threads
from torchvat.report import Report, plot_decision_boundaries, plot_learning_curves, text_table
from torchvat.runs import (
    DataSpec,
    ModelSpec,
    RunConfig,
    check_device,
    check_report_folder,
    describe_rows,
    load_run_data,
    new_run_dir,
    output_folder,
    staged_output,
    train_run,
)
from torchvat.train import TrainConfig

__all__ = ["DEMO_METHODS", "DemoResult", "add_parser", "demo_command", "run_demo"]

#: The three training modes and how the report names them.
DEMO_METHODS: dict[str, str] = {
    "supervised": "normal training",
    "at": "adversarial training",
    "vat": "virtual adversarial training",
}


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Args:
        out_dir: The report folder.
        errors: Final test error (fraction) per method.
        table: The printed table.
        paths: Files written, by name (``report``, ``boundaries``, ``curves``, ``results``).
        seconds: Wall time of the whole demo.
    """

    out_dir: Path
    errors: dict[str, float]
    table: str
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(
        "demo",
        help="normal vs adversarial vs virtual adversarial training on two moons (no download, < 1 min)",
        description=(__doc__ or "").replace("``", ""),
    )
    add_common_options(p)
    p.add_argument("--out", metavar="DIR", help="report folder (default: runs/demo-YYYYmmdd-HHMMSS)")
    p.add_argument("--iters", type=positive_int, default=1000, help="iterations per method (default: 1000)")
    p.add_argument("--labels", type=positive_int, default=8, help="labeled points (default: 8)")
    p.add_argument("--eps", type=nonnegative_float, default=0.3, help="perturbation size of AT and VAT (default: 0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, labels and training (default: 0)")
    p.add_argument("--device", default="cpu", help="device (default: cpu; the model is tiny)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier demo in --out (refused without it); it is replaced when the new demo "
        "is complete, and kept as it was if the new one fails",
    )
    p.set_defaults(command=demo_command)
    return p


def run_demo(
    out: str | Path | None = None,
    *,
    iters: int = 1000,
    n_labels: int = 8,
    eps: float = 0.3,
    seed: int = 0,
    device: str = "cpu",
    quiet: bool = False,
    overwrite: bool = False,
) -> DemoResult:
    """Train the three modes on two moons and write the report folder.

    The data and the folder are checked before anything is written; a folder the demo
    created is removed again when it fails with nothing in it.

    Args:
        out: The report folder (default: a new folder under ``runs/``).
        iters: Iterations per method.
        n_labels: Labeled points.
        eps: Perturbation size of adversarial and virtual adversarial training.
        seed: Seed of the data, the labels and the training.
        device: Training device.
        quiet: Print nothing.
        overwrite: Replace an earlier demo in ``out`` (one is refused otherwise).

    Returns:
        The errors, the table and the files written.

    Raises:
        UsageError: If ``out`` is a file or holds an earlier demo, or for invalid options.
    """
    start = time.perf_counter()
    out_dir = Path(out) if out is not None else new_run_dir("demo")
    data_spec = DataSpec(dataset="moons", n_labels=n_labels, seed=seed)
    check_device(device)
    data = load_run_data(data_spec, seed)  # bad options fail here, before any folder exists
    check_report_folder(out_dir, subdirs=DEMO_METHODS, overwrite=overwrite, what="demo")
    # written into a staging folder and moved into out_dir when the demo is complete: an earlier demo there
    # is untouched by one that fails; a new folder left empty is removed again
    with output_folder(out_dir), staged_output(out_dir) as work:
        train_cfg = TrainConfig(
            eps=eps,
            iterations=iters,
            batch_size=min(8, n_labels),
            unlabeled_batch_size=128,
            lr=0.01,
            eval_every=max(1, iters // 40),
            log_every=max(1, iters // 40),
            checkpoint_every=iters,
            seed=seed,
            device=device,
            collapse_patience=0,
        )
        if not quiet:
            what = f"{describe_rows(data)}, {iters} iterations per method"
            print(f"torchvat demo: two moons, {what}", flush=True)
        models, histories, errors, titles, times = {}, {}, {}, {}, {}
        for method, long_name in DEMO_METHODS.items():
            config = RunConfig(data=data_spec, model=ModelSpec("small-mlp"), train=train_cfg.replace(method=method))
            outcome = train_run(config, work / method, data=data, progress=not quiet)
            err = outcome.result.final["test_error"]
            models[method] = outcome.trainer.model
            histories[method] = outcome.result.history
            errors[method] = err
            times[method] = outcome.seconds
            titles[method] = f"{long_name} ({method})\ntest error {100 * err:.1f}%"
            if not quiet:
                print(f"  {method:<11} test error {100 * err:5.1f}%  ({outcome.seconds:.1f} s)", flush=True)
        n_unlabeled_only = data.n_unlabeled - (data.n_labeled if data.unlabeled_includes_labeled else 0)
        paths = {
            "boundaries": plot_decision_boundaries(
                models,
                work / "boundaries.png",
                x_labeled=data.x_labeled,
                y_labeled=data.y_labeled,
                x_unlabeled=data.x_unlabeled,
                titles=titles,
                suptitle=f"Two moons, {data.n_labeled} labeled points (large markers), "
                f"{n_unlabeled_only} unlabeled (grey); eps = {eps:g}",
            ),
            "curves": plot_learning_curves(histories, work / "curves.png", title="Two moons: learning curves"),
        }
        headers = ["method", "mode", "test error (%)", "seconds"]
        rows = [[m, DEMO_METHODS[m], round(100 * errors[m], 2), round(times[m], 1)] for m in DEMO_METHODS]
        with (work / "results.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "mode", "test_error", "seconds", "iterations", "eps", "n_labels", "seed"])
            for m in DEMO_METHODS:
                writer.writerow([m, DEMO_METHODS[m], errors[m], round(times[m], 3), iters, eps, n_labels, seed])
        paths["results"] = work / "results.csv"
        report = Report("torchvat demo: normal, adversarial and virtual adversarial training")
        report.text(
            f"The two-moons set of the VAT paper: {describe_rows(data)}, "
            f"{data.x_test.shape[0] if data.x_test is not None else 0} test points; the same small MLP (2-100-100-2) "
            f"trained {iters} iterations with each method (Adam, lr 0.01, eps = {eps:g}). "
            "Adversarial training only smooths the model around the labeled points; virtual adversarial "
            "training needs no labels for its perturbation, so it smooths the model around every unlabeled "
            "point too and the boundary is pushed into the gap between the moons."
        )
        report.table(headers, rows)
        report.figure("boundaries.png", "Decision boundaries (black line) and predicted probability of class 1")
        report.figure("curves.png", "Test error and training loss against the iteration")
        report.text(
            "Each method's run folder (`supervised/`, `at/`, `vat/`) holds `config.toml`, `run.json`, "
            "`metrics.jsonl` and checkpoints; try `torchvat evaluate " + str(out_dir / "vat" / "last.pt") + "`."
        )
        paths["report"] = report.write(work)
        paths = {key: out_dir / Path(path).relative_to(work) for key, path in paths.items()}  # once moved in
        table = text_table(headers, rows)
        seconds = time.perf_counter() - start
        if not quiet:
            print()
            print(table)
            print(f"\nreport: {paths['report']}  ({seconds:.1f} s)")
        return DemoResult(out_dir=out_dir, errors=errors, table=table, paths=paths, seconds=seconds)


def demo_command(args: argparse.Namespace) -> int:
    """Run ``torchvat demo`` from parsed arguments.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code.
    """
    with threads(args.threads if args.threads is not None else 1):
        run_demo(
            args.out,
            iters=args.iters,
            n_labels=args.labels,
            eps=args.eps,
            seed=args.seed,
            device=args.device,
            overwrite=args.overwrite,
        )
    return 0
