"""``torchvat compare``: several methods x several seeds on one dataset and label budget.

Each (method, seed) pair is trained one after another with the same options; the seed
drives the label selection (unless --data-seed fixes it) and the training. Prints the mean +- standard deviation of the
final test error per method and writes ``results.csv`` (one row per run), ``summary.csv``,
``compare.png`` (bars with error bars) and ``report.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchvat.cli import train as train_cli
from torchvat.cli._common import threads
from torchvat.data import SemiSupervisedData
from torchvat.report import Report, plot_comparison, text_table
from torchvat.runs import (
    RunConfig,
    UsageError,
    check_device,
    check_labeled_classes,
    check_report_folder,
    dump_toml,
    load_run_data,
    new_run_dir,
    output_folder,
    staged_output,
    train_run,
)
from torchvat.train import available_methods

__all__ = ["CompareResult", "add_parser", "compare_command", "run_compare"]


@dataclass
class CompareResult:
    """What :func:`run_compare` produced.

    Args:
        out_dir: The report folder.
        errors: Final test (or validation) error per method, one per seed.
        table: The printed summary table.
        paths: Files written, by name.
    """

    out_dir: Path
    errors: dict[str, list[float]]
    table: str
    paths: dict[str, Path] = field(default_factory=dict)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand (it takes every ``train`` option too).

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers`` returned.

    Returns:
        The subcommand's parser.
    """
    p = train_cli.add_parser(
        subparsers,
        name="compare",
        description=(__doc__ or "").replace("``", ""),
        help_text="methods x seeds, mean +- std",
    )
    p.add_argument(
        "--methods",
        default="supervised,at,vat",
        help=f"comma-separated methods from {', '.join(available_methods())} (default: supervised,at,vat)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.set_defaults(command=compare_command)
    return p


def _split(text: str, option: str, kind: type) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{option} must list at least one value, got {text!r}")
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UsageError(f"{option} must be comma-separated {kind.__name__} values, got {text!r}") from None
    if len(set(values)) != len(values):
        raise UsageError(f"{option} must not repeat values, got {text!r}")
    return values


def run_compare(
    config: RunConfig,
    methods: list[str],
    seeds: list[int],
    out: str | Path | None = None,
    *,
    quiet: bool = False,
    overwrite: bool = False,
) -> CompareResult:
    """Train every method with every seed and write the comparison.

    The methods, the data (for the first seed) and the folder are checked before anything is
    written; a folder the comparison created is removed again when it fails with nothing in it.

    Args:
        config: The shared configuration (its method and seed are replaced per run).
        methods: Method names.
        seeds: Seeds.
        out: The report folder (default: a new folder under ``runs/``).
        quiet: Print nothing.
        overwrite: Replace an earlier comparison in ``out`` (one is refused otherwise).

    Returns:
        The errors per method and the files written.

    Raises:
        UsageError: For an unknown method, data without a held-out split, or an ``out`` that
            is a file or holds an earlier comparison.
    """
    for m in methods:
        if m not in available_methods():
            raise UsageError(f"unknown method {m!r} in --methods; known methods: {', '.join(available_methods())}")
    check_device(config.train.device)
    out_dir = Path(out) if out is not None else new_run_dir(f"compare-{config.data.label}")
    run_names = {(m, s): f"{m}-seed{s}".replace("+", "-") for m in methods for s in seeds}
    loaded: dict[int, SemiSupervisedData] = {}  # by data seed: with --data-seed every run trains on the same data

    def data_for(seed: int) -> SemiSupervisedData:
        key = config.data.seed if config.data.seed is not None else seed
        if key not in loaded:
            loaded[key] = load_run_data(config.data, seed)
        return loaded[key]

    first = data_for(seeds[0])  # bad data options fail here, before any folder exists
    check_labeled_classes(first)
    if first.x_test is None and first.x_val is None:
        raise UsageError(
            "compare needs held-out data (a test or validation split), got none; "
            "hold out labeled rows with --data-option val_fraction=0.2 (your own files) or n_val=N (datasets)"
        )
    check_report_folder(out_dir, subdirs=run_names.values(), overwrite=overwrite, what="comparison")
    # written into a staging folder and moved into out_dir when the comparison is complete: an earlier
    # comparison there is untouched by one that fails; a new folder left empty is removed again
    with output_folder(out_dir), staged_output(out_dir) as work:
        result = _compare(config, methods, seeds, work, run_names, data_for, quiet=quiet)
    paths = {key: out_dir / Path(path).relative_to(work) for key, path in result.paths.items()}
    if not quiet:
        print(f"\nreport: {paths['report']}")
    return dataclasses.replace(result, out_dir=out_dir, paths=paths)


def _compare(
    config: RunConfig,
    methods: list[str],
    seeds: list[int],
    out_dir: Path,
    run_names: dict[tuple[str, int], str],
    data_for: Callable[[int], SemiSupervisedData],
    *,
    quiet: bool,
) -> CompareResult:
    rows: list[dict[str, Any]] = []
    errors: dict[str, list[float]] = {m: [] for m in methods}
    metric = None
    for seed in seeds:
        data = data_for(seed)
        n_labeled = data.n_labeled
        for method in methods:
            run_cfg = dataclasses.replace(config, train=config.train.replace(method=method, seed=seed))
            start = time.perf_counter()
            outcome = train_run(run_cfg, out_dir / run_names[method, seed], data=data, progress=not quiet)
            final = outcome.result.final
            metric = metric or ("test_error" if "test_error" in final else "val_error")
            if metric not in final:
                raise UsageError("compare needs held-out data (a test or validation split), got none")
            errors[method].append(final[metric])
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    metric: final[metric],
                    "eps": outcome.result.eps,
                    "steps": outcome.result.steps,
                    "seconds": round(time.perf_counter() - start, 3),
                }
            )
            if not quiet:
                print(f"  {method:<10} seed {seed}: {metric.replace('_', ' ')} {100 * final[metric]:.2f}%", flush=True)
    assert metric is not None
    with (out_dir / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    headers = ["method", "runs", f"mean {metric} (%)", "std (%)", "min (%)", "max (%)"]
    summary = []
    for m in methods:
        vals = [100 * v for v in errors[m]]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        summary.append(
            [m, len(vals), round(statistics.fmean(vals), 2), round(std, 2), round(min(vals), 2), round(max(vals), 2)]
        )
    with (out_dir / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        summary_rows = csv.writer(f)
        summary_rows.writerow(["method", "runs", f"mean_{metric}", "std", "min", "max"])
        for m in methods:
            vals = errors[m]
            summary_rows.writerow(
                [
                    m,
                    len(vals),
                    statistics.fmean(vals),
                    statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    min(vals),
                    max(vals),
                ]
            )
    label = config.data.label
    n_labels = n_labeled if config.data.n_labels is None else config.data.n_labels
    chart = plot_comparison(
        errors,
        out_dir / "compare.png",
        ylabel=f"{metric.replace('_', ' ')} (%)",
        title=f"{label}, {n_labels} labels, {len(seeds)} seed(s): mean ± std",
    )
    report = Report(f"torchvat compare: {label}, {n_labels} labels")
    if config.data.seed is None:
        seeding = "The seed selects the labels and drives the training."
    else:
        seeding = (
            f"Every run trains on the same data and labeled examples (--data-seed {config.data.seed}); "
            "the seed drives the training only."
        )
    report.text(
        f"Methods {', '.join(methods)}; seeds {', '.join(map(str, seeds))}; {config.train.iterations} iterations each. "
        f"{seeding} Each run's folder holds its config.toml and metrics."
    )
    report.table(headers, summary)
    report.figure(
        "compare.png", f"Mean {metric.replace('_', ' ')} per method; error bars: standard deviation over seeds"
    )
    report.heading("Shared configuration")
    shared = config.to_dict()
    for per_run in ("method", "seed"):  # set by --methods and --seeds; each run's config.toml has its own
        shared["train"].pop(per_run, None)
    report.code(dump_toml(shared), "toml")
    paths = {"results": out_dir / "results.csv", "summary": out_dir / "summary.csv", "chart": chart}
    paths["report"] = report.write(out_dir)
    table = text_table(
        ["method", "runs", f"{metric} (%) mean ± std"], [[r[0], r[1], f"{r[2]:.2f} ± {r[3]:.2f}"] for r in summary]
    )
    if not quiet:
        print()
        print(table)
    return CompareResult(out_dir=out_dir, errors=errors, table=table, paths=paths)


def compare_command(args: argparse.Namespace) -> int:
    """Run ``torchvat compare`` from parsed arguments.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code.
    """
    if args.list_recipes:
        print(train_cli.list_recipes())
        return 0
    if args.resume is not None:  # before any path is looked at
        raise UsageError("compare cannot --resume; rerun it")
    for single, plural in (("method", "methods"), ("seed", "seeds")):  # train's options, replaced here
        if getattr(args, f"t_{single}", None) is not None:
            raise UsageError(
                f"compare runs every --{plural} (here {getattr(args, plural)!r}); use --{plural}, not --{single}"
            )
    methods = _split(args.methods, "--methods", str)
    seeds = _split(args.seeds, "--seeds", int)
    if any(s < 0 for s in seeds):
        raise UsageError(f"--seeds must be integers >= 0, got {args.seeds!r}")
    config, out, _ = train_cli.resolve_config(args, default_prefix="compare")  # --resume is refused above
    with threads(args.threads):
        run_compare(config, methods, seeds, out, quiet=False, overwrite=args.overwrite)
    return 0
