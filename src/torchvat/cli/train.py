"""``torchvat train``: train one model with any method, from flags, a config file or a recipe."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchvat import params
from torchvat.cli._common import (
    add_common_options,
    nonnegative_float,
    parse_assignments,
    positive_int,
    threads,
)
from torchvat.data import available_datasets
from torchvat.data.registry import canonical_dataset_name, dataset_options
from torchvat.models import available_models
from torchvat.recipes import RecipeComparison, available_recipes, compare_to_recipe, load_recipe
from torchvat.report import Report, plot_learning_curves, text_table
from torchvat.runs import (
    AUGMENT,
    CONFIG_FILE,
    PREPROCESS,
    RUN_FILE,
    DataNotFoundError,
    DataSpec,
    RunConfig,
    RunOutcome,
    UsageError,
    check_device,
    describe_rows,
    new_run_dir,
    train_run,
)
from torchvat.train import TrainConfig, Trainer, available_methods, is_main_process
from torchvat.train.checkpoint import load_checkpoint, load_latest_checkpoint
from torchvat.train.distributed import broadcast_object, destroy_distributed, init_distributed
from torchvat.train.optim import EXTEND_MODES
from torchvat.train.trainer import SIGNAL_NOTICE

__all__ = [
    "add_parser",
    "check_same_data",
    "finished_at",
    "list_recipes",
    "no_held_out_hint",
    "recipe_comparison",
    "resolve_config",
    "resume_hint",
    "run_train",
    "train_command",
    "usable_checkpoint",
    "write_train_report",
]

# flags whose name differs from the TrainConfig field
_RENAMED = {"iterations": "--iters", "out_dir": "--out"}
_SKIPPED = {"extra"}  # --extra KEY=VALUE
#: options of the multi-step methods (pgd-at, trades), given as flags and passed on in TrainConfig.extra
_SEARCH_FLAGS = ("steps", "step_size", "random_start", "keep", "clamp", "clean_weight")


#: TrainConfig fields with a fixed set of values (shown as {a,b} in the help, checked by argparse)
_CHOICES = {
    name: params.choices(name)
    for name in (
        "norm",
        "probe",
        "regularize",
        "labeled_stats",
        "optimizer",
        "schedule",
        "nonfinite",
        "warmup_shape",
        "kl_direction",
    )
}
#: ``--amp``'s values: the declared ones, ``None`` spelled "none"
_AMP_CHOICES = tuple("none" if v is None else v for v in params.choices("amp"))
#: ``--bn-recalibrate``'s values: the declared ones, ``None`` spelled "none"
_RECALIBRATE_CHOICES = tuple("none" if v is None else v for v in params.choices("bn_recalibrate"))
#: the string modes of ``--compile`` (its declared choices besides the bools)
COMPILE_MODES = tuple(v for v in params.choices("compile") if isinstance(v, str))


def _field_help() -> dict[str, str]:
    """Per-field help text taken from TrainConfig's docstring ``Args:`` section."""
    doc = inspect.getdoc(TrainConfig) or ""
    section = doc.split("Args:", 1)[1].split("Raises:", 1)[0] if "Args:" in doc else ""
    helps: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            current = m.group(1)
            helps[current] = m.group(2)
        elif current and line.startswith("        "):
            helps[current] += " " + line.strip()
    return {k: _plain(v) for k, v in helps.items()}


def _plain(text: str) -> str:
    """Docstring text as help text: no reST roles or literals, and the CLI's spelling of Python values."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
    for python, cli in (("None derives", "auto derives"), ("(None: ", "(none: "), ("None or ", "none or ")):
        text = text.replace(python, cli)
    return text.replace("%", "%%")


def _optional_float_or_auto(text: str) -> float | str:
    if text.lower() == "auto":
        return "auto"
    return nonnegative_float(text)


def _optional_int(text: str) -> int | str:
    if text.lower() == "none":
        return "none"
    return positive_int(text)


_DESCRIPTION = (
    "Train a classifier with a supervised or semi-supervised method. Options come from, in "
    "increasing priority: the defaults, --recipe, --config, and the flags. The run folder gets "
    "config.toml (repeat the run with --config), run.json, metrics.jsonl, last.pt, best.pt (when "
    "there is held-out data) and a report (report.md, curves.png)."
)

_HOLD_OUT = "To evaluate, hold out labeled rows with"


def no_held_out_hint(spec: DataSpec) -> str:
    """How to get held-out data for the kind of data a run used, printed when it had none.

    Args:
        spec: The run's data section.

    Returns:
        The hint.

    Example:
        >>> no_held_out_hint(DataSpec(dataset=None, path="t.csv"))  # doctest: +NORMALIZE_WHITESPACE
        'To evaluate, hold out labeled rows with --data-option val_fraction=0.2, or give a labeled test
        file with --data-option test_path=FILE.csv.'
    """
    kind = spec.kind()
    if kind == "dataset":
        options = dataset_options(str(spec.dataset))
        option = next((o for o in ("n_val", "n_test") if o in options), None)
        return f"{_HOLD_OUT} --data-option {option}=N." if option else "The dataset has no held-out split."
    how = {
        "npz": "add X_test and y_test to the .npz",
        "csv": "give a labeled test file with --data-option test_path=FILE.csv",
        "images": "give a test folder (one sub-folder per class) with --data-option test_dir=DIR",
    }.get(kind)
    return f"{_HOLD_OUT} --data-option val_fraction=0.2" + (f", or {how}." if how else ".")


def add_parser(
    subparsers: Any,
    *,
    name: str = "train",
    description: str = _DESCRIPTION,
    help_text: str = "train a model (flags, --config FILE or --recipe NAME)",
) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand (``compare`` reuses it under its own name).

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers`` returned.
        name: The subcommand's name.
        description: Its description.
        help_text: Its one-line help.

    Returns:
        The subcommand's parser.
    """
    p = subparsers.add_parser(name, help=help_text, description=description)
    add_common_options(p)
    src = p.add_argument_group("configuration")
    src.add_argument("--config", metavar="FILE", help="a TOML file with [data], [model], [train] sections")
    src.add_argument("--recipe", metavar="NAME", help=f"a shipped recipe: {', '.join(available_recipes())}")
    src.add_argument("--list-recipes", action="store_true", help="list the shipped recipes and exit")
    src.add_argument(
        "--resume",
        nargs="?",
        const="last",
        metavar="PATH",
        help="continue from a checkpoint (default: last.pt of --out); its folder's config.toml is the base. "
        "Safe to pass on every start of a restart script: a run folder with no checkpoint yet starts from "
        "the beginning (with a notice), and a finished run exits 0 ('already finished at iteration N') "
        "without touching its files. With an --out other than the checkpoint's folder, the run branches: "
        "the history up to the checkpoint (metrics.jsonl, the checkpoint as last.pt, best.pt) is copied "
        "there first. A larger --iters extends the run; see --extend",
    )
    src.add_argument(
        "--extend",
        choices=EXTEND_MODES,
        default="recompute",
        help="what --resume with another --iters does to the learning-rate schedule: recompute (the default) "
        "follows, from the resumed iteration on, the schedule of a run planned for the new --iters (with "
        "the paper schedule a finished run goes back to the full rate and beta1 until the new decay phase); "
        "continue never raises the rate: it stays at the rate of the last iteration trained until the "
        "schedule over the new --iters comes down to it. The old and new rates are printed",
    )
    src.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in --out: the new run is built in --out/.torchvat-staging and replaces "
        "the earlier run's checkpoints, metrics and report when it has written its first checkpoint, so a "
        "new run that fails before leaves the earlier one as it was (a folder holding a checkpoint is "
        "refused without --overwrite, unless --resume continues it; one without a checkpoint is no run)",
    )

    d = p.add_argument_group("data")
    d.add_argument("--dataset", help=f"a dataset name: {', '.join(available_datasets())} (default: moons)")
    d.add_argument("--data", metavar="PATH", help="your data: a .npz (X, y) or .csv file or an image folder")
    d.add_argument("--labels", type=positive_int, metavar="N", help="number of labeled examples")
    d.add_argument("--data-seed", type=int, metavar="S", help="seed of the label selection (default: --seed)")
    d.add_argument(
        "--data-root",
        metavar="DIR",
        help="directory of the dataset files (default: $TORCHVAT_DATA, else ~/.cache/torchvat/data)",
    )
    d.add_argument("--download", action="store_true", default=None, help="let torchvision download missing files")
    d.add_argument("--preprocess", choices=PREPROCESS, help="input preprocessing, fitted on the training inputs")
    d.add_argument("--augment", choices=AUGMENT, help="image augmentation of every batch")
    d.add_argument(
        "--data-option", action="append", metavar="KEY=VALUE", help="a loader option, e.g. n_samples=500 (repeatable)"
    )

    m = p.add_argument_group("model")
    m.add_argument("--model", help=f"{', '.join(available_models())} (default: chosen from the input shape)")
    m.add_argument(
        "--model-option", action="append", metavar="KEY=VALUE", help="a model option, e.g. dropout=0.1 (repeatable)"
    )

    t = p.add_argument_group("training (every TrainConfig option)")
    helps = _field_help()
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SKIPPED:
            continue
        flag = _RENAMED.get(f.name, "--" + f.name.replace("_", "-"))
        dest = "t_" + f.name
        default = f.default if f.default is not dataclasses.MISSING else None
        text = helps.get(f.name, "")
        if f.name == "method":
            t.add_argument(flag, dest=dest, choices=available_methods(), help=text)
        elif f.name in _CHOICES:
            t.add_argument(flag, dest=dest, choices=_CHOICES[f.name], help=text)
        elif f.name in ("eps", "xi"):
            t.add_argument(flag, dest=dest, type=_optional_float_or_auto, metavar="X|auto", help=text)
        elif f.name == "amp":
            t.add_argument(flag, dest=dest, nargs="?", const="bf16", choices=_AMP_CHOICES, help=text)
        elif f.name == "bn_recalibrate":
            t.add_argument(flag, dest=dest, choices=_RECALIBRATE_CHOICES, help=text)
        elif f.name == "compile":
            text = (
                "train through torch.compile(model): --compile alone uses the default mode, --compile MODE "
                f"one of {', '.join(COMPILE_MODES)} (reduce-overhead: CUDA graphs, for small batches whose "
                "GPU step is bound by kernel launches); --no-compile (the default) trains the model as it is"
            )
            t.add_argument(flag, dest=dest, nargs="?", const=True, choices=COMPILE_MODES, metavar="MODE", help=text)
            t.add_argument("--no-compile", dest=dest, action="store_false", default=None, help="do not compile")
        elif f.name in ("checkpoint_every", "lr_decay_every", "bn_recalibrate_batches"):
            t.add_argument(flag, dest=dest, type=_optional_int, metavar="N|none", help=text)
        elif f.name == "device":
            t.add_argument(flag, dest=dest, metavar="DEVICE", help=text)
        elif f.name == "out_dir":
            t.add_argument(flag, dest=dest, metavar="DIR", help="the run folder (default: a new folder under runs/)")
        elif isinstance(default, bool):
            t.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif isinstance(default, int):
            t.add_argument(flag, dest=dest, type=int, metavar="N", help=text)
        elif isinstance(default, float) or isinstance(params.PARAMS.get(f.name), params.Real):  # beta: None default
            t.add_argument(flag, dest=dest, type=float, metavar="X", help=text)
        else:
            t.add_argument(flag, dest=dest, help=text)
    t.add_argument("--iterations", dest="t_iterations", type=int, help=argparse.SUPPRESS)
    t.add_argument("--extra", action="append", metavar="KEY=VALUE", help="an option of a registered method")
    ms = p.add_argument_group("multi-step search (methods pgd-at and trades)")
    ms.add_argument("--steps", dest="m_steps", type=positive_int, metavar="K", help="gradient steps of the search (10)")
    ms.add_argument(
        "--step-size", dest="m_step_size", type=nonnegative_float, metavar="X", help="size of each step (2.5 eps / K)"
    )
    ms.add_argument(
        "--random-start",
        dest="m_random_start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pgd-at: start from a random point of the ball (default: yes, as Madry et al.)",
    )
    ms.add_argument("--keep", dest="m_keep", choices=params.choices("keep"), help="the iterate kept (default: best)")
    ms.add_argument(
        "--clamp",
        dest="m_clamp",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="bounds of the perturbed input, e.g. 0 1 for pixels in [0, 1] (default: none)",
    )
    ms.add_argument(
        "--clean-weight",
        dest="m_clean_weight",
        type=nonnegative_float,
        metavar="X",
        help="pgd-at: weight of the clean cross entropy (default 0: Madry et al.'s loss on PGD examples alone)",
    )
    p.set_defaults(command=train_command)
    return p


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, "t_" + f.name, None)
        if value is None:
            continue
        if f.name == "eps" and value == "auto":
            value = None
        elif f.name in ("amp", "bn_recalibrate") and value == "none":
            value = None
        elif f.name in ("checkpoint_every", "lr_decay_every", "bn_recalibrate_batches") and value == "none":
            value = None
        out[f.name] = value
    if args.extra:
        out["extra"] = parse_assignments(args.extra, "--extra")
    search = {k: getattr(args, "m_" + k, None) for k in _SEARCH_FLAGS}
    search = {k: list(v) if k == "clamp" else v for k, v in search.items() if v is not None}
    if search:
        out["extra"] = {**out.get("extra", {}), **search}
    return out


def _merge(base: dict[str, dict[str, Any]], top: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in top.items():
        merged.setdefault(section, {}).update(values)
    return merged


def resolve_config(args: argparse.Namespace, *, default_prefix: str = "train") -> tuple[RunConfig, Path, str | None]:
    """Combine recipe, config file and flags into one configuration.

    Args:
        args: The parsed ``train`` arguments.
        default_prefix: Start of the default run folder's name.

    Returns:
        The configuration, the run folder and the checkpoint to resume from (or ``None``).

    Raises:
        UsageError: For conflicting or invalid options.
        FileNotFoundError: For a missing config file or checkpoint.
    """
    values: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "train": {}}
    out = Path(args.t_out_dir) if args.t_out_dir else None
    resume = None
    if args.resume is not None:
        if args.resume == "last":
            if out is None:
                raise UsageError("--resume without a PATH needs --out DIR (the run folder to continue)")
            resume = out / "last.pt"
        else:
            resume = Path(args.resume)
            out = out or resume.parent
        try:
            resume = usable_checkpoint(resume)
        except FileNotFoundError:
            if not _same_folder(resume.parent, out):  # a branch needs its checkpoint
                raise
            # a restart script's --resume before the run's first checkpoint: the run starts from the beginning
            if is_main_process():
                print(
                    f"torchvat train: no checkpoint in {out} yet: the run starts from the beginning (--resume)",
                    flush=True,
                )
            resume = None
        if resume is not None and args.config is None and args.recipe is None:
            if (resume.parent / CONFIG_FILE).is_file():
                values = _merge(values, RunConfig.from_toml(resume.parent / CONFIG_FILE).to_dict())
    if args.recipe is not None:
        try:
            values = _merge(values, load_recipe(args.recipe).config())
        except ValueError as err:
            raise UsageError(str(err)) from err
    if args.config is not None:
        values = _merge(values, RunConfig.from_toml(args.config).to_dict())
    data: dict[str, Any] = {}
    if args.dataset is not None and args.data is not None:
        raise UsageError("give either --dataset NAME or --data PATH, got both")
    if args.dataset is not None:
        data.update(dataset=args.dataset, path=None)
    if args.data is not None:
        data.update(path=args.data, dataset=None)
    for key, attr in (("n_labels", "labels"), ("seed", "data_seed"), ("root", "data_root"), ("download", "download")):
        if getattr(args, attr) is not None:
            data[key] = getattr(args, attr)
    for key in ("preprocess", "augment"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.data_option:
        data["options"] = {**values["data"].get("options", {}), **parse_assignments(args.data_option, "--data-option")}
    model: dict[str, Any] = {}
    if args.model is not None:
        model["name"] = args.model
    if args.model_option:
        model["kwargs"] = {
            **values["model"].get("kwargs", {}),
            **parse_assignments(args.model_option, "--model-option"),
        }
    train = _train_overrides(args)
    train.pop("out_dir", None)
    values = _merge(values, {"data": data, "model": model, "train": train})
    config = RunConfig.from_dict(values, where="options")
    check_device(config.train.device)
    # absolute: evaluate, visualize and --resume find the data from any working directory
    config = dataclasses.replace(config, data=config.data.with_absolute_paths())
    if resume is not None:
        check_same_data(config, resume.parent / CONFIG_FILE)
    if out is None:
        suffix = f"-{config.train.method}" if default_prefix == "train" else ""
        out = new_run_dir(f"{default_prefix}-{config.data.label}{suffix}".replace("+", "-"))
    return config, out, None if resume is None else str(resume)


#: the [data] settings a resumed run must keep, with the option that sets each; root and download only
#: say where the files are and how to get them
_DATA_FLAGS = {
    "dataset": "--dataset",
    "path": "--data",
    "n_labels": "--labels",
    "seed": "--data-seed",
    "preprocess": "--preprocess",
    "zca_eps": "[data] zca_eps",
    "gcn_scale": "[data] gcn_scale",
    "augment": "--augment",
    "max_shift": "[data] max_shift",
    "options": "--data-option",
}


def check_same_data(config: RunConfig, run_config: Path) -> None:
    """Refuse a resume whose ``[data]`` settings differ from those of the run it continues.

    Args:
        config: The resolved configuration of the resumed run.
        run_config: The ``config.toml`` of the checkpoint's run (nothing is checked without one).

    Raises:
        UsageError: Naming each setting that differs, its value in the run and now.
    """
    if not run_config.is_file():
        return
    saved = RunConfig.from_toml(run_config)
    before = saved.data.with_absolute_paths()  # a relative path of an older run: from the working directory
    before = dataclasses.replace(before, seed=before.seed if before.seed is not None else saved.train.seed)
    now = dataclasses.replace(config.data, seed=config.data.seed if config.data.seed is not None else config.train.seed)
    if before.path is not None:  # a file's run: the dataset name (config.toml leaves out None: the default) is unused
        before = dataclasses.replace(before, dataset=None)
    if now.path is not None:
        now = dataclasses.replace(now, dataset=None)
    diffs = []
    for key, flag in _DATA_FLAGS.items():
        a, b = getattr(before, key), getattr(now, key)
        if key == "dataset" and a is not None and b is not None:  # an alias (two-moons) is the same dataset
            same = canonical_dataset_name(str(a)) == canonical_dataset_name(str(b))
        else:
            same = a == b
        if not same:
            there, here = ("unset (the default)" if v is None else repr(v) for v in (a, b))
            diffs.append(f"{key} ({flag}) is {there} there, {here} now")
    if diffs:
        raise UsageError(
            f"--resume continues a run on the data it was trained on, but the [data] settings differ from "
            f"{run_config}: {'; '.join(diffs)}; leave out the options that change them, or start a new run "
            "(without --resume)"
        )


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder (an unresolvable path is another folder)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def finished_at(resume: str, iterations: int) -> int | None:
    """The iteration a checkpoint is at, when it has trained ``iterations`` or more (``None`` otherwise).

    Args:
        resume: The checkpoint.
        iterations: The run's ``--iters``.

    Returns:
        The checkpoint's iteration, or ``None`` when there is training left.
    """
    step = int(load_checkpoint(resume).get("step", 0))
    return step if step >= iterations else None


def _resumed_recipe(resume: str | None) -> str | None:
    """The recipe recorded in the ``run.json`` beside a checkpoint (``None`` when there is none)."""
    if resume is None:
        return None
    try:
        recipe = json.loads((Path(resume).parent / RUN_FILE).read_text(encoding="utf-8")).get("recipe")
    except (OSError, ValueError, AttributeError):
        return None
    return recipe if isinstance(recipe, str) and recipe in available_recipes() else None


def usable_checkpoint(path: Path) -> Path:
    """The checkpoint to resume from: ``path``, or its newest good previous version.

    A missing, truncated or corrupted ``last.pt`` falls back to ``last.prev.pt`` (and older
    versions) with a warning naming each file skipped and why.

    Args:
        path: The checkpoint asked for.

    Returns:
        The file to resume from.

    Raises:
        FileNotFoundError: If neither the file nor a previous version exists.
        CheckpointError: If every candidate is unreadable (each is named).
    """
    try:
        used, _ = load_latest_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"checkpoint to resume not found: {path}") from err
    return used


def resume_hint(outcome: RunOutcome) -> str:
    """The message printed when a signal stopped training: where the state is, how to resume.

    Args:
        outcome: The interrupted run.

    Returns:
        The message.
    """
    res = outcome.result
    saved = res.paths.get("last", str(outcome.out_dir / "last.pt"))
    return (
        f"torchvat train: {res.interrupted} received, stopped after iteration {res.steps} of "
        f"{outcome.config.train.iterations}; the state is saved in {saved}. "
        f"Resume with: torchvat train --resume --out {outcome.out_dir}"
    )


def list_recipes() -> str:
    """The shipped recipes as a table (name, description, reported errors).

    Returns:
        The text.
    """
    rows = []
    for name in available_recipes():
        r = load_recipe(name)
        reported = ", ".join(f"{k} {v:.2f}%" for k, v in r.reported.items()) or "-"
        rows.append([name, r.description, reported])
    return text_table(["recipe", "description", "paper's test error"], rows)


def _describe_eps(trainer: Trainer, config: RunConfig, given: float | None) -> str:
    if trainer.eps is None:
        return f"method {trainer.method.name}: no perturbation (eps unused)"
    if trainer.step:  # resumed: the value in use, given or derived by the run that wrote the checkpoint
        return f"eps = {trainer.eps:.6g} (in use at iteration {trainer.step})"
    if given is not None:
        how = "given"
    elif trainer.x_unlabeled is not None:
        how = "derived from the data: 0.75 x the median distance from an unlabeled point to its nearest labeled one"
    else:
        how = "derived from the data: 0.75 x the median distance from a labeled point to its nearest other one"
    return f"eps = {trainer.eps:.6g} ({how})"


def recipe_comparison(outcome: RunOutcome, recipe: str, given: RunConfig | None = None) -> RecipeComparison:
    """The run's final test error beside its recipe's reported one, the iterations, the settings changed.

    Args:
        outcome: The finished run.
        recipe: The recipe's name.
        given: The configuration as given, before eps was derived (default: the outcome's).

    Returns:
        The comparison (:meth:`~torchvat.recipes.RecipeComparison.sentence` words it).
    """
    final = outcome.result.final or {}
    error = final.get("test_error")
    return compare_to_recipe(
        load_recipe(recipe),
        given if given is not None else outcome.config,
        steps=int(outcome.result.steps),
        test_error=None if error is None else 100 * float(error),
        eps_derived_earlier=given is None or outcome.start_step > 0,
    )


def write_train_report(
    outcome: RunOutcome, *, recipe: str | None = None, comparison: RecipeComparison | None = None
) -> Path:
    """Write ``curves.png`` and ``report.md`` into the run's folder.

    Args:
        outcome: The finished run.
        recipe: The recipe's name, to put the papers' errors beside the result.
        comparison: The run against its recipe (default: :func:`recipe_comparison` of the outcome).

    Returns:
        The path of ``report.md``.
    """
    out = outcome.out_dir
    res = outcome.result
    report = Report(f"torchvat train: {res.method} on {outcome.data.name}")
    report.text(
        f"{describe_rows(outcome.data)}; model `{outcome.config.model.name}`, {_iterations_done(outcome)}."
        + ("" if res.eps is None else f" eps = {res.eps:.4g}.")
        + (
            ""
            if res.config.get("ema") is None
            else f" The held-out figures are those of the EMA of the weights (decay {res.config['ema']:g}); "
            "`torchvat evaluate RUN --weights raw` evaluates the trained weights."
        )
    )
    headers, rows = _summary_rows(outcome)
    if rows:
        report.table(headers, rows)
    else:
        report.text(f"No held-out data: nothing was evaluated. {no_held_out_hint(outcome.config.data)}")
    if recipe is not None:
        r = load_recipe(recipe)
        comparison = comparison if comparison is not None else recipe_comparison(outcome, recipe)
        report.heading(f"Against the recipe `{recipe}`")
        report.text(
            ("This run reproduces the recipe as written: " if comparison.reproduces else "**Not a reproduction**: ")
            + comparison.sentence()
            + "."
        )
        if r.notes:
            report.text(f"Where the recipe itself departs from its source: {r.notes}")
        if r.reported:
            report.heading("Reported in the papers")
            report.text(r.source)
            own = comparison.test_error
            rows = [
                [k, v, "" if k != comparison.method or own is None else round(own, 2)] for k, v in r.reported.items()
            ]
            report.table(["method", "reported test error (%)", "this run's final test error (%)"], rows)
    if res.history:
        plot_learning_curves(
            {res.method: res.history}, out / "curves.png", title=f"{res.method} on {outcome.data.name}"
        )
        report.figure("curves.png", "Held-out error and training loss against the iteration")
    report.heading("Configuration")
    report.code((out / CONFIG_FILE).read_text(encoding="utf-8"), "toml")
    return report.write(out)


def _iterations_done(outcome: RunOutcome) -> str:
    """``300 iterations in 1.2 s``, or for a resumed run ``5 iterations (iterations 301-305) in 0.1 s``."""
    start, steps = outcome.start_step, outcome.result.steps
    done = f"{steps - start} iterations" + (f" (iterations {start + 1}-{steps})" if start else "")
    return f"{done} in {outcome.seconds:.1f} s"


@contextlib.contextmanager
def _without_trainer_signal_notice() -> Iterator[None]:
    """Drop the trainer's log line on a signal while the CLI trains: the CLI prints its own (:func:`resume_hint`)."""

    def keep(record: logging.LogRecord) -> bool:
        return record.msg is not SIGNAL_NOTICE

    logger = logging.getLogger("torchvat.train.trainer")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _summary_rows(outcome: RunOutcome) -> tuple[list[str], list[list[Any]]]:
    res = outcome.result
    rows: list[list[Any]] = []
    # "best" is chosen on the validation split when there is one; chosen on the test split, its
    # test error is an optimistic estimate, and the label says so
    chosen_on = "best (chosen on val)" if "val_error" in res.best else "best (chosen on test: optimistic)"
    for label, record in (("final", res.final), (chosen_on, res.best)):
        if not record:
            continue
        for split in ("val", "test"):
            if f"{split}_error" in record:
                rows.append(
                    [
                        label,
                        split,
                        int(record["step"]),
                        round(100 * record[f"{split}_error"], 2),
                        round(record[f"{split}_loss"], 4),
                    ]
                )
    return ["record", "split", "step", "error (%)", "loss"], rows


def run_train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    resume: str | None = None,
    recipe: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    extend: str = "recompute",
) -> RunOutcome:
    """Train, write the run folder and the report, print a summary.

    Args:
        config: The run configuration.
        out_dir: The run folder.
        resume: A checkpoint to continue from.
        recipe: The recipe the configuration came from (for the report; kept in ``run.json``).
        quiet: Print nothing.
        overwrite: Replace a run already in ``out_dir`` (``--overwrite``).
        extend: What a resume with another number of iterations does to the schedule (``--extend``).

    Returns:
        The outcome.
    """

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    def ready(trainer: Trainer, resolved: RunConfig, branched: bool) -> None:
        where = f"on {trainer.device}, model {resolved.model.name}, run folder {out_dir}"
        resumed = f", resumed at iteration {trainer.step}" if trainer.step else ""
        say(f"torchvat train: {trainer.method.name} {where}{resumed}")
        if branched:
            say(f"branched from {resume}: its history up to iteration {trainer.step} is copied into {out_dir}")
        say(_describe_eps(trainer, resolved, config.train.eps))

    try:
        with _without_trainer_signal_notice():
            outcome = train_run(
                config,
                out_dir,
                resume=resume,
                overwrite=overwrite,
                progress=not quiet,
                on_ready=ready,
                recipe=recipe,
                extend=extend,
                notify=say,
            )
    except DataNotFoundError as err:  # the data only: not a missing output folder or checkpoint
        hint = ""
        if recipe is not None and load_recipe(recipe).download:
            hint = f"; to get the data: {load_recipe(recipe).download}"
        elif config.data.path is None and not config.data.download:
            hint = "; use --download to fetch it (torchvision) or --data-root DIR"
        raise DataNotFoundError(f"{err}{hint}") from err
    if not is_main_process():  # distributed: rank 0 writes the report and prints
        return outcome
    if outcome.result.interrupted is not None:  # stop quickly: no report
        sys.stderr.write(resume_hint(outcome) + "\n")
        return outcome
    comparison = None if recipe is None else recipe_comparison(outcome, recipe, config)
    report = write_train_report(outcome, recipe=recipe, comparison=comparison)
    headers, rows = _summary_rows(outcome)
    hint = no_held_out_hint(outcome.config.data)
    say(text_table(headers, rows) if rows else f"no held-out data: nothing evaluated. {hint}")
    skipped = outcome.result.skipped_steps
    if skipped:
        say(f"{skipped} of {outcome.result.steps} iterations skipped for a non-finite loss or gradient")
    say(f"{_iterations_done(outcome)}; report: {report}")
    if comparison is not None:  # the last line: a shortened or changed run is never taken for a reproduction
        say(f"recipe {recipe}: {comparison.sentence()}")
    return outcome


def train_command(args: argparse.Namespace) -> int:
    """Run ``torchvat train`` from parsed arguments.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code.
    """
    if args.list_recipes:
        print(list_recipes())
        return 0
    config, out, resume = resolve_config(args)
    if resume is not None and _same_folder(Path(resume).parent, out):
        step = finished_at(resume, config.train.iterations)
        if step is not None:  # a restart script's --resume after the end: nothing to do, nothing touched
            if is_main_process():
                print(
                    f"torchvat train: the run in {out} already finished at iteration {step} "
                    f"(--iters {config.train.iterations}); nothing to train, its files are left as they were. "
                    f"To train further, pass --iters above {step}",
                    flush=True,
                )
            return 0
    recipe = args.recipe or _resumed_recipe(resume)  # a resumed recipe run keeps the papers' table
    # under torchrun: one process group for the run; every process uses rank 0's run folder
    owns_group = init_distributed(config.train.device, config.train.dist_timeout)
    try:
        out = Path(broadcast_object(str(out)))
        with threads(args.threads):
            outcome = run_train(
                config,
                out,
                resume=resume,
                recipe=recipe,
                quiet=not is_main_process(),
                overwrite=args.overwrite,
                extend=args.extend,
            )
        if owns_group:  # every process finished: tear down together
            destroy_distributed(wait=True)
            owns_group = False
    finally:
        if owns_group:  # this process failed: do not wait for the others
            destroy_distributed()
    if outcome.result.interrupted is not None:
        return 128 + int(signal.Signals[outcome.result.interrupted])
    final = outcome.result.final
    return 0 if not final or all(math.isfinite(v) for v in final.values() if isinstance(v, float)) else 1
