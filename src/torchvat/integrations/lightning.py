"""Lightning integration: train any classifier with VAT (or any torchvat method) in ``lightning``.

``VATModule`` (or :func:`vat_module`, which builds one) wraps a model in a
``lightning.LightningModule`` whose ``training_step`` is torchvat's: the clean passes, the
method's perturbation search and perturbed pass, the weighted sum of the named terms
(:func:`torchvat.train.compute_method_loss`, the same code as :class:`torchvat.train.Trainer`),
with automatic optimization and every term logged with ``self.log`` as ``train_<term>``.

Training batches may be:

* a tuple or list ``(x_labeled, y_labeled, x_unlabeled)`` or ``(x_labeled, y_labeled)``;
* a dict ``{"x_labeled": ..., "y_labeled": ..., "x_unlabeled": ...}`` (``x_unlabeled`` optional);
* what ``lightning.pytorch.utilities.CombinedLoader({"labeled": dl_l, "unlabeled": dl_u},
  mode="max_size_cycle")`` yields: ``{"labeled": (x, y), "unlabeled": x or (x, ...)}`` (the
  unlabeled loader's first element is used; its labels, if any, are ignored);
* a :class:`torchvat.train.Batch`.

Validation batches are ``(x, y)``; ``val_loss`` and ``val_acc`` are logged.

BatchNorm running statistics are updated by the clean passes only (the core functions freeze
them in the probe and perturbed passes). Under Lightning's DDP strategy the whole
``training_step`` is one forward of the DDP wrapper (the passes inside call the plain model),
so the gradient all-reduce happens once, in the backward of the total loss.

This module imports ``lightning`` (``pip install 'torchvat[lightning]'``) at its top;
:mod:`torchvat.integrations` re-exports :class:`VATModule` on first access, so that
``import torchvat`` and ``import torchvat.integrations`` never need it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning as L
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "torchvat.integrations.lightning needs the lightning package: pip install 'torchvat[lightning]'"
    ) from err

from torchvat import params
from torchvat.train.defaults import DEFAULT_LABELED_STATS, DEFAULT_REGULARIZE, derive_eps, resolve_regularize
from torchvat.train.distributed import all_reduce_mean, broadcast_buffers, is_distributed, rank_seed
from torchvat.train.methods import Batch, Method, get_method, method_hyperparameters
from torchvat.train.trainer import compute_method_loss

__all__ = ["VATModule", "parse_batch", "vat_module"]

logger = logging.getLogger(__name__)


def _as_input(value: Any, name: str) -> Tensor:
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"{name} must be a tensor or a non-empty tuple whose first element is one, got ()")
        value = value[0]
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def parse_batch(batch: Any) -> Batch:
    """Turn a training batch in one of the accepted layouts into a :class:`~torchvat.train.Batch`.

    Args:
        batch: ``(x_l, y_l)``, ``(x_l, y_l, x_u)``, a dict with ``x_labeled``/``y_labeled``/
            ``x_unlabeled``, a ``CombinedLoader`` dict ``{"labeled": (x, y), "unlabeled": x}``,
            or a ``Batch``.

    Returns:
        The batch.

    Raises:
        TypeError: If the batch has none of these layouts.
        ValueError: If a tuple has the wrong length.

    Example:
        >>> b = parse_batch({"labeled": (torch.zeros(2, 3), torch.tensor([0, 1])), "unlabeled": [torch.ones(5, 3)]})
        >>> b.x_labeled.shape, b.x_unlabeled.shape
        (torch.Size([2, 3]), torch.Size([5, 3]))
        >>> parse_batch((torch.zeros(2, 3), torch.tensor([0, 1]))).x_unlabeled is None
        True
    """
    if isinstance(batch, Batch):
        return batch
    if isinstance(batch, Mapping):
        if "labeled" in batch:
            labeled = batch["labeled"]
            if not isinstance(labeled, list | tuple) or len(labeled) < 2:
                raise TypeError(f"batch['labeled'] must be an (x, y) pair, got {type(labeled).__name__}")
            unlabeled = batch.get("unlabeled")
            x_u = None if unlabeled is None else _as_input(unlabeled, "batch['unlabeled']")
            return Batch(_as_input(labeled[0], "x_labeled"), labeled[1], x_u)
        if "x_labeled" in batch and "y_labeled" in batch:
            x_u = batch.get("x_unlabeled")
            return Batch(batch["x_labeled"], batch["y_labeled"], None if x_u is None else _as_input(x_u, "x_unlabeled"))
        raise TypeError(
            "a dict batch must have keys 'x_labeled' and 'y_labeled' (and optionally 'x_unlabeled'), "
            f"or 'labeled' and 'unlabeled' (CombinedLoader); got keys {sorted(batch)}"
        )
    if isinstance(batch, list | tuple):
        if len(batch) not in (2, 3):
            raise ValueError(f"a tuple batch must be (x_labeled, y_labeled[, x_unlabeled]), got length {len(batch)}")
        x_u = batch[2] if len(batch) == 3 else None
        return Batch(batch[0], batch[1], None if x_u is None else _as_input(x_u, "x_unlabeled"))
    raise TypeError(f"batch must be a tuple, a dict or a torchvat.train.Batch, got {type(batch).__name__}")


class VATModule(L.LightningModule):
    """A LightningModule training ``model`` with a torchvat method (see the module docstring).

    Args:
        model: A classifier returning logits ``[B, n_classes]``.
        method: A method name (``"vat"``, ``"vat+ent"``, ``"at"``, ...) or a
            :class:`~torchvat.train.Method` instance.
        lr: Learning rate of the default Adam optimizer.
        optimizer: ``callable(parameters) -> torch.optim.Optimizer`` replacing the default.
        seed: Seed of the method's own generator (VAT's random starts).
        sync_dist: Passed to ``self.log`` (average the logged values over processes).
        labeled_stats: The statistics BatchNorm normalizes the labeled rows of separate clean
            passes with, as ``TrainConfig.labeled_stats`` (``"own"`` or ``"unlabeled"``).
        **hparams: The method's hyperparameters (``eps``, ``xi``, ``alpha``, ``beta``,
            ``n_power``, ``norm``, ``probe``, ``regularize``); one the method does not take is
            an error. The method's name and these are saved as Lightning hyperparameters, and
            checkpoints hold the ``eps`` in use and the method's generator, so
            ``load_from_checkpoint(path, model=...)`` and ``fit(ckpt_path=...)`` continue with
            them (``load_from_checkpoint(path, model=..., eps=...)`` overrides the saved eps, as
            any keyword overrides a saved hyperparameter). Without ``eps`` it is derived
            from the first training batch by the trainer's rule,
            :func:`torchvat.train.defaults.derive_eps` (0.75 x the median distance from an
            unlabeled row of the batch to its nearest labeled row of the batch; averaged over
            the processes when distributed, and logged). A batch holds a few labeled rows, so
            this eps is larger than the one the whole labeled set gives: pass
            ``eps=derive_eps(x_l, x_u)`` on the whole sets for the trainer's value. Without
            ``regularize`` (or with ``"auto"``) the rows regularized are the trainer's for
            ``model``: every row in one joint clean pass with BatchNorm, the unlabeled ones
            otherwise (:func:`torchvat.train.defaults.resolve_regularize`); the resolved value
            is the saved hyperparameter.
    """

    def __init__(
        self,
        model: nn.Module,
        method: str | Method = "vat",
        *,
        lr: float = 1e-3,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        seed: int = 0,
        sync_dist: bool = False,
        labeled_stats: str = DEFAULT_LABELED_STATS,
        **hparams: Any,
    ) -> None:
        super().__init__()
        params.check("labeled_stats", labeled_stats)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not callable(optimizer):
            raise TypeError(f"optimizer must be callable or None, got {type(optimizer).__name__}")
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        if isinstance(method, Method):
            if hparams:
                raise ValueError(f"pass hyperparameters to the Method instance, got extra {sorted(hparams)}")
            self.method = method
        elif isinstance(method, str):
            try:
                accepted = method_hyperparameters(method)
            except ValueError:  # an unknown name: get_method says so
                accepted = frozenset()
            if accepted is not None and "regularize" in accepted and isinstance(model, nn.Module):
                # the engine's default, an "auto" resolved by the model (saved as the resolved value)
                hparams["regularize"] = resolve_regularize(hparams.get("regularize", DEFAULT_REGULARIZE), model)
            self.method = get_method(method, strict=True, **hparams)
        else:
            raise TypeError(f"method must be a name or a torchvat.train.Method, got {type(method).__name__}")
        self.model = model
        self.lr = float(lr)
        self.optimizer_factory = optimizer
        self.seed = int(seed)
        self.sync_dist = bool(sync_dist)
        self.labeled_stats = labeled_stats
        self._generator: torch.Generator | None = None
        self._generator_state: Tensor | None = None  # restored from a checkpoint, applied on first use
        self._eps_derived = False  # set by _ensure_eps
        # a method given by name is a hyperparameter (load_from_checkpoint rebuilds it); an instance is not
        self.save_hyperparameters(ignore=["model", "optimizer"] + ([] if isinstance(method, str) else ["method"]))

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped model's output."""
        return self.model(x)

    def _method_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed + 7919 * self.global_rank)
            if self._generator_state is not None:  # resumed: the saved stream is rank 0's
                state, self._generator_state = self._generator_state, None
                restored = False
                if self.global_rank == 0:  # other processes draw their own starts, as in a fresh run
                    with contextlib.suppress(RuntimeError):  # a state of another device type (GPU -> CPU)
                        self._generator.set_state(state)
                        restored = True
                if not restored:
                    self._generator.manual_seed(rank_seed(self.seed, self.global_rank, 2, self.global_step))
        return self._generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the method's ``eps`` (derived from the first batch when not given) and its generator."""
        generator = self._generator.get_state() if self._generator is not None else self._generator_state
        checkpoint["torchvat"] = {"eps": getattr(self.method, "eps", None), "generator": generator}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the ``eps`` and generator of :meth:`on_save_checkpoint` (a resumed run derives no new eps).

        The saved ``eps`` is restored only when this module's own is to be derived (the
        ``eps`` hyperparameter is ``None``): an ``eps`` given to ``load_from_checkpoint(path,
        eps=...)`` overrides the saved hyperparameter, as any other keyword does, and is kept.
        """
        state = checkpoint.get("torchvat")
        if state is None:
            return
        if state.get("eps") is not None and hasattr(self.method, "eps") and self._eps_is_derived():
            self.method.eps = state["eps"]
        if state.get("generator") is not None:
            self._generator, self._generator_state = None, state["generator"]

    def _eps_is_derived(self) -> bool:
        """Whether the method's ``eps`` comes from the data rather than from the user.

        For a method given by name, the ``eps`` hyperparameter says it; a :class:`Method`
        instance (not a hyperparameter) derives it when its ``eps`` is ``None``, or was
        derived here.
        """
        if "method" in self.hparams:
            return self.hparams.get("eps") is None
        return getattr(self.method, "eps", None) is None or self._eps_derived

    def _ensure_eps(self, batch: Batch) -> None:
        regularized = any(k not in self.method.supervised_terms for k in self.method.weights)
        if getattr(self.method, "eps", 0.0) is None and regularized:
            source = batch.x_labeled
            x_u = None if batch.x_unlabeled is None else batch.x_unlabeled.detach()
            eps = derive_eps(source.detach(), x_u)  # the trainer's rule, on this batch
            if is_distributed():  # each process saw its own first batch: one eps for all, their mean
                eps = float(all_reduce_mean(torch.tensor([eps], dtype=torch.float64, device=source.device))[0])
            method: Any = self.method  # a method with an eps (checked above)
            method.eps = eps
            self._eps_derived = True
            logger.info("torchvat: eps=%.6g derived from the first batch with the trainer's rule (derive_eps)", eps)

    def on_train_end(self) -> None:
        """Give every process rank 0's buffers (DDP leaves each one's last BatchNorm update local)."""
        broadcast_buffers(self.model)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One batch: clean passes, the method's terms, their weighted sum (logged)."""
        b = parse_batch(batch)
        if not self.method.uses_unlabeled:
            b = Batch(b.x_labeled, b.y_labeled, None)
        self._ensure_eps(b)
        loss, terms, clean = compute_method_loss(
            self.model,
            self.method,
            b,
            self.method.weights,
            generator=self._method_generator(b.x_labeled.device),
            labeled_stats=self.labeled_stats,
        )
        n = int(b.x_labeled.shape[0])
        for name, term in terms.items():
            self.log(f"train_{name}", term.detach(), batch_size=n, sync_dist=self.sync_dist)
        self.log("train_loss", loss.detach(), batch_size=n, prog_bar=True, sync_dist=self.sync_dist)
        with torch.no_grad():
            acc = (clean.labeled_logits.argmax(1) == b.y_labeled).float().mean()
        self.log("train_acc", acc, batch_size=n, sync_dist=self.sync_dist)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Log ``val_loss`` (cross-entropy) and ``val_acc`` of an ``(x, y)`` batch."""
        x, y = batch[0], batch[1]
        logits = self.model(x).float()
        n = int(y.shape[0])
        self.log("val_loss", nn.functional.cross_entropy(logits, y), batch_size=n, sync_dist=self.sync_dist)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("val_acc", acc, batch_size=n, prog_bar=True, sync_dist=self.sync_dist)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with ``lr``, or the ``optimizer`` factory's optimizer."""
        if self.optimizer_factory is not None:
            return self.optimizer_factory(self.model.parameters())
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


def vat_module(model: nn.Module, method: str | Method = "vat", **kwargs: Any) -> Any:
    """Build a ``VATModule`` (a ``lightning.LightningModule``) training ``model`` with ``method``.

    Args:
        model: A classifier returning logits ``[B, n_classes]``.
        method: A method name or a :class:`~torchvat.train.Method` instance.
        **kwargs: ``lr``, ``optimizer``, ``seed``, ``sync_dist``, ``labeled_stats`` and the method's
            hyperparameters (``eps``, ``alpha``, ``n_power``, ...); see ``VATModule``.

    Returns:
        The LightningModule; pass it to ``lightning.Trainer.fit``. The same as
        ``VATModule(model, method, **kwargs)``.
    """
    return VATModule(model, method, **kwargs)
