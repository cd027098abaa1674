"""Training methods: small objects that turn one clean pass into named loss terms.

A method receives the batch and the output of the trainer's single clean forward pass and
returns a dict of named loss terms; the trainer adds them up with :attr:`Method.weights`,
logs each one, and makes one backward pass. The perturbation searches are the core
functions (:func:`torchvat.vat_loss`, :func:`torchvat.adversarial_loss`,
:func:`torchvat.trades_loss`, :func:`torchvat.entropy_loss`); nothing here re-implements them.

A regularizer whose weight is exactly 0 is switched off: it is neither computed nor logged,
and a method whose regularizers are all off does not ask for unlabeled data. ``"vat"`` with
``alpha=0`` is therefore the supervised trainer, step for step.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from torchvat import params
from torchvat.core import RNGSnapshot, adversarial_loss, entropy_loss, trades_loss, vat_loss
from torchvat.core.divergence import reversed_divergence
from torchvat.core.search import check_search

__all__ = [
    "TRADES",
    "AdversarialTraining",
    "AdversarialVAT",
    "Batch",
    "CleanPass",
    "Method",
    "PGDAdversarialTraining",
    "RandomPerturbationTraining",
    "Supervised",
    "VATEntMin",
    "VirtualAdversarialTraining",
    "available_methods",
    "check_method_options",
    "get_method",
    "method_hyperparameters",
    "register_method",
    "unregister_method",
]


@dataclass
class Batch:
    """One training iteration's data, already on the training device.

    Args:
        x_labeled: Labeled inputs ``[B_l, ...]``.
        y_labeled: Their class indices ``[B_l]``.
        x_unlabeled: Unlabeled inputs ``[B_u, ...]``, or ``None`` when the method does not use
            unlabeled data or there is none.
    """

    x_labeled: Tensor
    y_labeled: Tensor
    x_unlabeled: Tensor | None = None


@dataclass
class CleanPass:
    """The trainer's clean forward passes: every sample of the iteration goes through once.

    Two layouts, chosen by the method (:attr:`Method.joint_clean_pass`):

    * joint: one pass over ``cat([x_labeled, x_unlabeled])`` (``x``/``logits`` hold every row);
    * separate: a pass over the labeled rows (``x``/``logits``) and one over the unlabeled
      rows (``unlabeled_x``/``unlabeled_logits``, made without gradients unless the method asks).

    The layout matters with BatchNorm: the target of a perturbation search must come from a
    pass with the same batch composition as the perturbed passes, or the divergence at
    ``r = 0`` is not 0 and training collapses (see :mod:`torchvat.train`). A regularizer on
    the unlabeled rows therefore uses the separate layout, one on all rows the joint layout.

    Args:
        x: The input of the (first) pass: labeled rows first, then, when joint, unlabeled rows.
        logits: ``model(x)``, with its graph (methods detach where they need a target).
        n_labeled: Number of labeled rows at the top of ``x``.
        rng: Random-generator state captured just before the pass over ``x``.
        generator: A generator on the training device for the method's own random draws;
            it is separate from the global stream and saved in checkpoints.
        unlabeled_x: The unlabeled rows, when they had a pass of their own.
        unlabeled_logits: Their logits.
        unlabeled_rng: Random-generator state captured just before that pass.
    """

    x: Tensor
    logits: Tensor
    n_labeled: int
    rng: RNGSnapshot | None = None
    generator: torch.Generator | None = None
    unlabeled_x: Tensor | None = None
    unlabeled_logits: Tensor | None = None
    unlabeled_rng: RNGSnapshot | None = None

    @property
    def x_labeled(self) -> Tensor:
        """Labeled rows of :attr:`x`."""
        return self.x[: self.n_labeled]

    @property
    def labeled_logits(self) -> Tensor:
        """Logits of the labeled rows."""
        return self.logits[: self.n_labeled]

    @property
    def unlabeled_logits_any(self) -> Tensor | None:
        """Logits of the unlabeled rows from whichever layout (``None`` without unlabeled rows)."""
        if self.separate:
            return self.unlabeled_logits
        return self.logits[self.n_labeled :] if self.x.shape[0] > self.n_labeled else None

    @property
    def separate(self) -> bool:
        """Whether the unlabeled rows had a pass of their own."""
        return self.unlabeled_x is not None

    @property
    def has_unlabeled(self) -> bool:
        """Whether the iteration has unlabeled rows."""
        return self.separate or self.x.shape[0] > self.n_labeled

    def regularized(self, regularize: str) -> tuple[Tensor, Tensor, RNGSnapshot | None]:
        """Inputs, logits and pre-pass random state of the rows a regularizer applies to.

        Args:
            regularize: ``"all"`` for every row, ``"unlabeled"`` for the unlabeled rows (all
                rows when the iteration has no unlabeled data).

        Returns:
            ``(x, logits, rng)``; the rows come from one pass, so a search on them sees the
            batch composition of its target.

        Raises:
            ValueError: If ``regularize`` is not ``"unlabeled"`` or ``"all"``, or asks for all
                rows of a separate layout (two passes with different batch statistics).
        """
        if regularize not in ("unlabeled", "all"):
            raise ValueError(f"regularize must be 'unlabeled' or 'all', got {regularize!r}")
        if self.separate:
            if regularize == "all":
                raise ValueError("regularize='all' needs the joint clean pass; this method's joint_clean_pass is False")
            return self.unlabeled_x, self.unlabeled_logits, self.unlabeled_rng  # type: ignore[return-value]
        if regularize == "all" or not self.has_unlabeled:
            return self.x, self.logits, self.rng
        return self.x[self.n_labeled :], self.logits[self.n_labeled :], self.rng

    def rows(self, regularize: str) -> tuple[Tensor, Tensor]:
        """Inputs and logits of the rows a regularizer applies to (see :meth:`regularized`)."""
        x, logits, _ = self.regularized(regularize)
        return x, logits


class Method(abc.ABC):
    """Base class of training methods.

    Subclasses implement :meth:`loss_terms` and :attr:`weights`; they may set
    :attr:`uses_unlabeled` (whether the trainer should draw unlabeled batches) and
    :attr:`needs_input_grad` (whether the clean pass's input should require gradients, so
    an adversarial search can reuse its graph). Terms named in :attr:`supervised_terms` are
    not scaled by the trainer's regularizer warm-up.

    Example:
        >>> class LogitPenalty(Method):
        ...     name = "logit-penalty"
        ...     weights = {"ce": 1.0, "l2": 0.01}
        ...     def loss_terms(self, model, batch, clean):
        ...         return {"ce": self.cross_entropy(batch, clean),
        ...                 "l2": clean.logits.pow(2).mean()}
        >>> model = nn.Linear(2, 3)
        >>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        >>> clean = CleanPass(x=x, logits=model(x), n_labeled=4)
        >>> sorted(LogitPenalty().loss_terms(model, Batch(x, y), clean))
        ['ce', 'l2']
    """

    name: str = "method"
    supervised_terms: ClassVar[frozenset[str]] = frozenset({"ce"})
    needs_input_grad: bool = False
    #: one clean pass over labeled + unlabeled rows (True), or one per group (False)
    joint_clean_pass: bool = True
    #: whether the separate unlabeled pass must keep its graph (e.g. for an entropy term)
    needs_unlabeled_grad: bool = True
    weights: dict[str, float]

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the method needs unlabeled batches (default ``False``)."""
        return False

    @abc.abstractmethod
    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Compute the named loss terms of one iteration.

        Args:
            model: The model (possibly compiled); called on perturbed inputs.
            batch: The iteration's data.
            clean: The clean forward pass over labeled then unlabeled rows.

        Returns:
            Scalar loss tensors by name; every name must be a key of :attr:`weights`.
        """

    @staticmethod
    def cross_entropy(batch: Batch, clean: CleanPass) -> Tensor:
        """Supervised cross-entropy of the labeled rows of the clean pass.

        Args:
            batch: The iteration's data.
            clean: The clean pass.

        Returns:
            The mean cross-entropy.
        """
        return F.cross_entropy(clean.labeled_logits.float(), batch.y_labeled)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weights})"


class Supervised(Method):
    """Plain supervised training: cross-entropy on the labeled batch only.

    Example:
        >>> Supervised().weights
        {'ce': 1.0}
    """

    name = "supervised"

    def __init__(self) -> None:
        self.weights = {"ce": 1.0}

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``{"ce": cross-entropy}``; see :meth:`Method.loss_terms`."""
        return {"ce": self.cross_entropy(batch, clean)}


#: the rows a method regularizes, resolved (the Trainer resolves the engine's "auto" before it builds one)
_RESOLVED_REGULARIZE = tuple(v for v in params.choices("regularize") if v != "auto")


def _check_regularize(regularize: str) -> None:
    if regularize not in _RESOLVED_REGULARIZE:
        raise ValueError(
            f"regularize must be one of {', '.join(map(repr, _RESOLVED_REGULARIZE))} for a method "
            f"(the Trainer resolves 'auto' by the model), got {regularize!r}"
        )


def _check_weight(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


class VirtualAdversarialTraining(Method):
    r"""VAT (Miyato et al., TPAMI 2018): cross-entropy plus ``alpha`` times the LDS.

    .. math::
        \ell = \mathrm{CE}(x_l, y_l) + \alpha\,
        \mathrm{KL}\big[p(y|x) \,\|\, p(y|x + r_{\mathrm{vadv}})\big]

    The LDS target is the detached clean output of the rows chosen by ``regularize``; the
    search replays the clean pass's dropout masks and draws its random start from the
    trainer's private generator, so it does not consume the global random stream.

    Args:
        eps: Perturbation size (``None`` until the trainer derives it from the data).
        xi: Finite-difference step or ``"auto"``.
        alpha: Weight of the LDS term.
        n_power: Power iterations (0 is random perturbation training).
        norm: ``"l2"`` or ``"linf"``.
        probe: ``"auto"`` (default), ``"finite_difference"`` or ``"exact"``; see :func:`torchvat.vat_loss`.
        regularize: ``"unlabeled"`` or ``"all"`` rows.
        kl_direction: ``"clean-perturbed"`` (the papers' ``KL(p(x) || p(x + r))``) or
            ``"perturbed-clean"`` (``KL(p(x + r) || p(x))``, Oliver et al. 2018), for the search
            and the loss (:func:`torchvat.core.divergence.reversed_divergence`).

    Example:
        >>> VirtualAdversarialTraining(eps=2.0, alpha=0.5).weights
        {'ce': 1.0, 'vat': 0.5}
    """

    name = "vat"
    term = "vat"
    #: the likelihood of the model's output (see :func:`torchvat.vat_loss`); subclasses may change it
    likelihood = "categorical"

    def __init__(
        self,
        eps: float | None = None,
        xi: float | str = "auto",
        alpha: float = 1.0,
        n_power: int = 1,
        norm: str = "l2",
        probe: str = "auto",
        regularize: str = "unlabeled",
        kl_direction: str = "clean-perturbed",
    ) -> None:
        _check_weight("alpha", alpha)
        _check_regularize(regularize)
        params.check("kl_direction", kl_direction)
        self.kl_direction = kl_direction
        self.eps = eps
        self.xi = xi
        self.alpha = float(alpha)
        self.n_power = n_power
        self.norm = norm
        self.probe = probe
        self.regularize = regularize
        self.weights = {"ce": 1.0}
        if self.alpha != 0:
            self.weights[self.term] = self.alpha

    @property
    def uses_unlabeled(self) -> bool:
        """Whether any regularizer is on."""
        return len(self.weights) > 1

    @property
    def joint_clean_pass(self) -> bool:  # type: ignore[override]
        """Joint pass when every row is regularized; else the unlabeled rows get their own."""
        return self.regularize == "all"

    @property
    def needs_unlabeled_grad(self) -> bool:  # type: ignore[override]
        """The LDS target is detached: the unlabeled pass needs no graph."""
        return False

    def _eps(self) -> float:
        if self.eps is None:
            raise ValueError(f"{type(self).__name__}.eps is None; pass eps=... or let the Trainer derive it")
        return self.eps

    def lds(self, model: nn.Module, clean: CleanPass) -> Tensor:
        """The local distributional smoothness term on the regularized rows.

        Args:
            model: The model.
            clean: The clean pass.

        Returns:
            The mean LDS.
        """
        x, logits, rng = clean.regularized(self.regularize)
        return vat_loss(
            model,
            x.detach(),
            logits=logits,
            eps=self._eps(),
            xi=self.xi,
            n_power=self.n_power,
            norm=self.norm,  # type: ignore[arg-type]  # a str checked against torchvat.params by vat_loss
            likelihood=self.likelihood,
            divergence=None if self.kl_direction == "clean-perturbed" else reversed_divergence(self.likelihood),
            probe=self.probe,  # type: ignore[arg-type]  # a str checked against torchvat.params by vat_loss
            generator=clean.generator,
            rng=rng,
        )

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``ce`` and (when ``alpha != 0``) the LDS; see :meth:`Method.loss_terms`."""
        terms = {"ce": self.cross_entropy(batch, clean)}
        if self.term in self.weights:
            terms[self.term] = self.lds(model, clean)
        return terms


class RandomPerturbationTraining(VirtualAdversarialTraining):
    """Random perturbation training: VAT with ``n_power=0`` (an isotropic random direction).

    Example:
        >>> RandomPerturbationTraining(eps=1.0).weights
        {'ce': 1.0, 'rpt': 1.0}
    """

    name = "rpt"
    term = "rpt"

    def __init__(
        self,
        eps: float | None = None,
        alpha: float = 1.0,
        norm: str = "l2",
        regularize: str = "unlabeled",
        kl_direction: str = "clean-perturbed",
    ) -> None:
        super().__init__(eps=eps, alpha=alpha, n_power=0, norm=norm, regularize=regularize, kl_direction=kl_direction)


class VATEntMin(VirtualAdversarialTraining):
    r"""VAT plus entropy minimization (Miyato et al., TPAMI 2018, "VAT+EntMin").

    .. math::
        \ell = \mathrm{CE} + \alpha\,\mathrm{LDS} + \beta\,\mathcal{H}[p(y|x)]

    The conditional entropy is taken on the clean logits of the regularized rows, with
    gradients.

    Args:
        eps: Perturbation size.
        xi: Finite-difference step or ``"auto"``.
        alpha: Weight of the LDS term.
        beta: Weight of the entropy term.
        n_power: Power iterations.
        norm: ``"l2"`` or ``"linf"``.
        probe: ``"auto"`` (default), ``"finite_difference"`` or ``"exact"``; see :func:`torchvat.vat_loss`.
        regularize: ``"unlabeled"`` or ``"all"`` rows.
        kl_direction: The divergence's order; see :class:`VirtualAdversarialTraining`.

    Example:
        >>> VATEntMin(eps=1.0, beta=0.5).weights
        {'ce': 1.0, 'vat': 1.0, 'ent': 0.5}
    """

    name = "vat+ent"

    def __init__(
        self,
        eps: float | None = None,
        xi: float | str = "auto",
        alpha: float = 1.0,
        beta: float = 1.0,
        n_power: int = 1,
        norm: str = "l2",
        probe: str = "auto",
        regularize: str = "unlabeled",
        kl_direction: str = "clean-perturbed",
    ) -> None:
        super().__init__(eps, xi, alpha, n_power, norm, probe, regularize, kl_direction)
        _check_weight("beta", beta)
        self.beta = float(beta)
        if self.beta != 0:
            self.weights["ent"] = self.beta

    @property
    def needs_unlabeled_grad(self) -> bool:  # type: ignore[override]
        """The entropy term backpropagates through the clean unlabeled logits."""
        return "ent" in self.weights

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``ce``, ``vat`` and ``ent`` (the ones switched on)."""
        terms = super().loss_terms(model, batch, clean)
        if "ent" in self.weights:
            terms["ent"] = entropy_loss(clean.rows(self.regularize)[1].float())
        return terms


def _labeled_adversarial_loss(
    model: nn.Module,
    batch: Batch,
    clean: CleanPass,
    *,
    eps: float,
    norm: str,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """The adversarial loss of the labeled rows, reusing the clean graph when it covers exactly them."""
    reuse = clean.x.requires_grad and clean.x.shape[0] == clean.n_labeled
    x = clean.x if reuse else clean.x_labeled.detach()
    return adversarial_loss(
        model,
        x,
        batch.y_labeled,
        logits=clean.labeled_logits if reuse else None,
        eps=eps,
        norm=norm,  # type: ignore[arg-type]  # a str checked against torchvat.params by the loss
        loss_fn=loss_fn,
        rng=clean.rng,
    )


class AdversarialTraining(Method):
    r"""Adversarial training (Goodfellow et al., ICLR 2015) on the labeled rows.

    .. math::
        \ell = \mathrm{CE}(x_l, y_l) + \alpha\,\mathrm{CE}(x_l + r_{\mathrm{adv}}, y_l),
        \quad r_{\mathrm{adv}} = \epsilon\,
        \frac{\nabla_x \mathrm{CE}}{\|\nabla_x \mathrm{CE}\|}

    The input gradient comes from the clean pass's graph when it covers exactly the labeled
    rows; the perturbed pass replays the clean pass's random state.

    Args:
        eps: Perturbation size.
        alpha: Weight of the adversarial term.
        norm: ``"l2"`` or ``"linf"``.

    Example:
        >>> AdversarialTraining(eps=0.3).weights
        {'ce': 1.0, 'at': 1.0}
    """

    name = "at"
    #: per-sample supervised loss of the adversarial term (``None``: cross entropy)
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None

    def __init__(self, eps: float | None = None, alpha: float = 1.0, norm: str = "l2") -> None:
        _check_weight("alpha", alpha)
        self.eps = eps
        self.alpha = float(alpha)
        self.norm = norm
        self.weights = {"ce": 1.0}
        if self.alpha != 0:
            self.weights["at"] = self.alpha

    @property
    def needs_input_grad(self) -> bool:  # type: ignore[override]
        """Whether the adversarial term is on (its search reuses the clean graph)."""
        return "at" in self.weights

    def adversarial(self, model: nn.Module, batch: Batch, clean: CleanPass) -> Tensor:
        """The cross-entropy at the adversarial input of the labeled rows.

        Args:
            model: The model.
            batch: The iteration's data.
            clean: The clean pass.

        Returns:
            The mean adversarial cross-entropy.
        """
        if self.eps is None:
            raise ValueError(f"{type(self).__name__}.eps is None; pass eps=... or let the Trainer derive it")
        return _labeled_adversarial_loss(model, batch, clean, eps=self.eps, norm=self.norm, loss_fn=self.loss_fn)

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``ce`` and (when ``alpha != 0``) ``at``."""
        terms = {"ce": self.cross_entropy(batch, clean)}
        if "at" in self.weights:
            terms["at"] = self.adversarial(model, batch, clean)
        return terms


class AdversarialVAT(VirtualAdversarialTraining):
    """Adversarial training on the labeled rows plus VAT on the regularized rows.

    Both terms have weight ``alpha``.

    Args:
        eps: Perturbation size of both searches.
        xi: Finite-difference step or ``"auto"``.
        alpha: Weight of the AT and VAT terms.
        n_power: Power iterations of the VAT search.
        norm: ``"l2"`` or ``"linf"``.
        probe: ``"auto"`` (default), ``"finite_difference"`` or ``"exact"``; see :func:`torchvat.vat_loss`.
        regularize: Rows of the VAT term, ``"unlabeled"`` or ``"all"``.
        kl_direction: The divergence's order; see :class:`VirtualAdversarialTraining`.

    Example:
        >>> AdversarialVAT(eps=1.0).weights
        {'ce': 1.0, 'vat': 1.0, 'at': 1.0}
    """

    name = "at+vat"

    def __init__(
        self,
        eps: float | None = None,
        xi: float | str = "auto",
        alpha: float = 1.0,
        n_power: int = 1,
        norm: str = "l2",
        probe: str = "auto",
        regularize: str = "unlabeled",
        kl_direction: str = "clean-perturbed",
    ) -> None:
        super().__init__(eps, xi, alpha, n_power, norm, probe, regularize, kl_direction)
        if self.alpha != 0:
            self.weights["at"] = self.alpha

    @property
    def needs_input_grad(self) -> bool:  # type: ignore[override]
        """With its own labeled pass, the adversarial search reuses that pass's graph."""
        return "at" in self.weights and not self.joint_clean_pass

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``ce``, ``vat`` and ``at`` (the ones switched on)."""
        terms = super().loss_terms(model, batch, clean)
        if "at" in self.weights:
            terms["at"] = _labeled_adversarial_loss(model, batch, clean, eps=self._eps(), norm=self.norm)
        return terms


def _check_search_options(
    steps: int, step_size: float | None, random_start: bool, keep: str, clamp: tuple[float, float] | list[float] | None
) -> tuple[float, float] | None:
    """Check a multi-step search's options (the declared valid values) and return ``clamp`` as a tuple.

    A configuration file or the command line gives ``clamp`` as a list; the core takes a pair.
    """
    check_search(steps, step_size, random_start, clamp, keep)  # type: ignore[arg-type]  # a list is checked too
    return None if clamp is None else (float(clamp[0]), float(clamp[1]))


class PGDAdversarialTraining(Method):
    r"""PGD adversarial training (Madry et al., ICLR 2018) on the labeled rows.

    .. math::
        \ell = w_{\mathrm{clean}}\,\mathrm{CE}(x_l, y_l) + \alpha\,\mathrm{CE}(x_l + r_{\mathrm{pgd}}, y_l),
        \quad r_{\mathrm{pgd}} \approx \arg\max_{\lVert r \rVert \le \epsilon} \mathrm{CE}(x_l + r, y_l)

    :math:`r_{\mathrm{pgd}}` is ``steps`` steps of projected gradient ascent in the
    ``eps``-ball (:func:`torchvat.adversarial_loss`), from a uniform random point of the ball
    (``random_start``, as Madry et al.) drawn from the trainer's private generator. Every pass of
    the search replays the clean pass's random state (dropout masks), and BatchNorm running
    statistics are left as the clean pass set them. Madry et al. minimize the loss on the PGD
    examples alone: ``clean_weight=0`` (the default; the term ``pgd`` only). ``clean_weight=1``
    mixes in the clean cross entropy (term ``ce``), as Goodfellow et al. 2015 do; with
    ``steps=1`` and ``random_start=False`` that is :class:`AdversarialTraining` exactly. A warm-up
    (``warmup_iters``) ramps the ``pgd`` term, as every regularizer.

    Args:
        eps: Radius of the ball (``None`` until the trainer derives it from the data).
        alpha: Weight of the PGD term.
        norm: ``"l2"`` or ``"linf"``.
        steps: Gradient steps of the search (Madry et al.: 7 on CIFAR-10, 40 on MNIST).
        step_size: Size of each step; ``None``: ``2.5 * eps / steps`` (Madry et al.).
        random_start: Start from a uniform random point of the ball instead of ``x``.
        keep: ``"best"`` (the iterate of highest loss per sample) or ``"last"`` (Madry et al.'s).
        clamp: ``(lo, hi)`` bounds of the perturbed input (``(0, 1)`` for images in [0, 1]), or
            ``None`` (inputs may be points or embeddings of any range).
        clean_weight: Weight of the clean cross entropy (0: Madry et al.'s loss alone).

    Example:
        >>> PGDAdversarialTraining(eps=0.3).weights
        {'pgd': 1.0}
        >>> PGDAdversarialTraining(eps=0.3, clean_weight=1.0).weights
        {'ce': 1.0, 'pgd': 1.0}
    """

    name = "pgd-at"

    def __init__(
        self,
        eps: float | None = None,
        alpha: float = 1.0,
        norm: str = "l2",
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        keep: str = "best",
        clamp: tuple[float, float] | None = None,
        clean_weight: float = 0.0,
    ) -> None:
        _check_weight("alpha", alpha)
        _check_weight("clean_weight", clean_weight)
        self.clamp = _check_search_options(steps, step_size, random_start, keep, clamp)
        self.eps = eps
        self.alpha = float(alpha)
        self.norm = norm
        self.steps, self.step_size, self.random_start, self.keep = steps, step_size, random_start, keep
        self.clean_weight = float(clean_weight)
        self.weights = {}
        if self.clean_weight != 0:
            self.weights["ce"] = self.clean_weight
        if self.alpha != 0:
            self.weights["pgd"] = self.alpha
        if not self.weights:
            raise ValueError("alpha and clean_weight are both 0: pgd-at would have no loss term; set one > 0")

    @property
    def needs_input_grad(self) -> bool:  # type: ignore[override]
        """Without a random start, the search's first gradient reuses the clean pass's graph."""
        return "pgd" in self.weights and not self.random_start

    def adversarial(self, model: nn.Module, batch: Batch, clean: CleanPass) -> Tensor:
        """The mean cross entropy at the PGD examples of the labeled rows.

        Args:
            model: The model.
            batch: The iteration's data.
            clean: The clean pass.

        Returns:
            The mean adversarial cross entropy.
        """
        if self.eps is None:
            raise ValueError(f"{type(self).__name__}.eps is None; pass eps=... or let the Trainer derive it")
        reuse = not self.random_start and clean.x.requires_grad and clean.x.shape[0] == clean.n_labeled
        return adversarial_loss(
            model,
            clean.x if reuse else clean.x_labeled.detach(),
            batch.y_labeled,
            logits=clean.labeled_logits if reuse else None,
            eps=self.eps,
            norm=self.norm,  # type: ignore[arg-type]  # checked by the core
            steps=self.steps,
            step_size=self.step_size,
            random_start=self.random_start,
            clamp=self.clamp,
            keep=self.keep,  # type: ignore[arg-type]  # checked above
            rng=clean.rng,
            generator=clean.generator,
        )

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``pgd`` and (when ``clean_weight != 0``) ``ce``."""
        terms = {}
        if "ce" in self.weights:
            terms["ce"] = self.cross_entropy(batch, clean)
        if "pgd" in self.weights:
            terms["pgd"] = self.adversarial(model, batch, clean)
        return terms


class TRADES(Method):
    r"""TRADES (Zhang et al., ICML 2019): cross entropy plus ``beta`` times the robust KL term.

    .. math::
        \ell = \mathrm{CE}(x_l, y_l) + \beta\,
        \max_{\lVert r \rVert \le \epsilon}\mathrm{KL}\big[p(y|x) \,\|\, p(y|x + r)\big]

    The robust term is :func:`torchvat.trades_loss`: VAT's divergence maximized by ``steps``
    steps of projected gradient ascent from a random point of the ball (drawn from the trainer's
    private generator) instead of VAT's power iteration. It needs no label, so, like VAT's, it
    applies to the rows chosen by ``regularize``: the unlabeled rows (semi-supervised robust
    training, Carmon et al. 2019, Uesato et al. 2019), or all rows; without unlabeled data, the
    labeled rows, which is the paper's loss. As in the paper, the clean prediction is not a
    constant: the term's gradient goes through the clean pass of its rows (whose batch
    composition the search's passes share, as VAT's target), and every pass replays that clean
    pass's random state. ``beta`` defaults to 6, the paper's setting for its CIFAR-10 results
    (the paper uses 1 to 6).

    Args:
        eps: Radius of the ball (``None`` until the trainer derives it from the data).
        beta: Weight of the robust KL term.
        norm: ``"l2"`` or ``"linf"`` (the paper's).
        steps: Gradient steps of the search (the paper: 10 on CIFAR-10, 40 on MNIST).
        step_size: Size of each step; ``None``: ``2.5 * eps / steps``.
        keep: ``"best"`` (the iterate of highest divergence per sample) or ``"last"`` (the paper's).
        clamp: ``(lo, hi)`` bounds of the perturbed input, or ``None``.
        regularize: ``"unlabeled"`` or ``"all"`` rows.

    Example:
        >>> TRADES(eps=0.3).weights
        {'ce': 1.0, 'trades': 6.0}
    """

    name = "trades"

    def __init__(
        self,
        eps: float | None = None,
        beta: float = 6.0,
        norm: str = "l2",
        steps: int = 10,
        step_size: float | None = None,
        keep: str = "best",
        clamp: tuple[float, float] | None = None,
        regularize: str = "unlabeled",
    ) -> None:
        _check_weight("beta", beta)
        _check_regularize(regularize)
        self.clamp = _check_search_options(steps, step_size, True, keep, clamp)
        self.eps = eps
        self.beta = float(beta)
        self.norm = norm
        self.steps, self.step_size, self.keep = steps, step_size, keep
        self.regularize = regularize
        self.weights = {"ce": 1.0}
        if self.beta != 0:
            self.weights["trades"] = self.beta

    @property
    def uses_unlabeled(self) -> bool:
        """Whether the robust term is on."""
        return "trades" in self.weights

    @property
    def joint_clean_pass(self) -> bool:  # type: ignore[override]
        """Joint pass when every row is regularized; else the unlabeled rows get their own."""
        return self.regularize == "all"

    @property
    def needs_unlabeled_grad(self) -> bool:  # type: ignore[override]
        """The robust term backpropagates through the clean logits of its rows (the paper)."""
        return "trades" in self.weights

    def robust(self, model: nn.Module, clean: CleanPass) -> Tensor:
        """The mean robust KL term on the regularized rows.

        Args:
            model: The model.
            clean: The clean pass.

        Returns:
            The mean divergence at the TRADES perturbation.
        """
        if self.eps is None:
            raise ValueError(f"{type(self).__name__}.eps is None; pass eps=... or let the Trainer derive it")
        x, logits, rng = clean.regularized(self.regularize)
        return trades_loss(
            model,
            x.detach(),
            logits=logits,
            eps=self.eps,
            norm=self.norm,  # type: ignore[arg-type]  # checked by the core
            steps=self.steps,
            step_size=self.step_size,
            clamp=self.clamp,
            keep=self.keep,  # type: ignore[arg-type]  # checked above
            generator=clean.generator,
            rng=rng,
        )

    def loss_terms(self, model: nn.Module, batch: Batch, clean: CleanPass) -> dict[str, Tensor]:
        """Return ``ce`` and (when ``beta != 0``) ``trades``."""
        terms = {"ce": self.cross_entropy(batch, clean)}
        if "trades" in self.weights:
            terms["trades"] = self.robust(model, clean)
        return terms


_REGISTRY: dict[str, Callable[..., Method]] = {
    "supervised": Supervised,
    "rpt": RandomPerturbationTraining,
    "at": AdversarialTraining,
    "vat": VirtualAdversarialTraining,
    "vat+ent": VATEntMin,
    "at+vat": AdversarialVAT,
    "pgd-at": PGDAdversarialTraining,
    "trades": TRADES,
}
_BUILTIN = frozenset(_REGISTRY)


def register_method(name: str, factory: Callable[..., Method], *, overwrite: bool = False) -> None:
    """Make a method available by name to :func:`get_method` and the trainer.

    Args:
        name: The method's name.
        factory: Callable returning a :class:`Method`; it is called with the hyperparameters
            its signature accepts among ``eps, xi, alpha, beta, n_power, norm, probe,
            regularize`` and ``TrainConfig.extra`` (all of them if it takes ``**kwargs``).
        overwrite: Whether to replace an existing method of that name.

    Raises:
        ValueError: If ``name`` is taken and ``overwrite`` is false, or is not a string.
        TypeError: If ``factory`` is not callable.

    Example:
        >>> register_method("ce-only", lambda: Supervised())
        >>> get_method("ce-only", eps=1.0).weights
        {'ce': 1.0}
        >>> unregister_method("ce-only")
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"method {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = factory


def unregister_method(name: str) -> None:
    """Remove a method added with :func:`register_method`.

    Args:
        name: The method's name.

    Raises:
        ValueError: If ``name`` is not registered or is a built-in method.
    """
    if name in _BUILTIN:
        raise ValueError(f"built-in method {name!r} cannot be unregistered")
    if name not in _REGISTRY:
        raise ValueError(f"method {name!r} is not registered; registered: {list(available_methods())}")
    del _REGISTRY[name]


def available_methods() -> tuple[str, ...]:
    """Names of the registered methods.

    Returns:
        The names, sorted.

    Example:
        >>> {"supervised", "vat", "vat+ent"} <= set(available_methods())
        True
    """
    return tuple(sorted(_REGISTRY))


def method_hyperparameters(name: str) -> frozenset[str] | None:
    """The keyword arguments the factory of method ``name`` takes (``None``: any, ``**kwargs``).

    Raises:
        ValueError: If ``name`` is not registered (the message lists the known names).
    """
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {', '.join(map(repr, available_methods()))}, got {name!r}")
    try:
        params = inspect.signature(_REGISTRY[name]).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: take everything
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def check_method_options(name: str, options: Mapping[str, Any]) -> None:
    """Refuse options that method ``name`` does not take (a misspelt or misplaced hyperparameter).

    Raises:
        ValueError: Naming the unknown options and the method's hyperparameters.
    """
    accepted = method_hyperparameters(name)
    unused = [] if accepted is None else sorted(set(options) - accepted)
    if unused:
        raise ValueError(
            f"method {name!r} takes the hyperparameters {sorted(accepted or ())}, got {unused} besides; "
            "remove them or choose the method that uses them"
        )


def get_method(name: str, *, strict: bool = False, **hparams: Any) -> Method:
    """Build a registered method.

    Hyperparameters the factory does not accept are ignored, so one set of options can
    configure every method; with ``strict=True`` they are an error (for hyperparameters a user
    typed for this one method, where a misspelt or unused one must not pass silently).

    Args:
        name: A name from :func:`available_methods`.
        strict: Refuse hyperparameters the method does not take.
        **hparams: Hyperparameters (``eps``, ``xi``, ``alpha``, ...).

    Returns:
        The method.

    Raises:
        ValueError: If ``name`` is not registered (the message lists the known names), or, with
            ``strict``, a hyperparameter is not one of the method's.
        TypeError: If the factory does not return a :class:`Method`.

    Example:
        >>> get_method("vat+ent", eps=1.0, alpha=1.0, beta=0.0).weights
        {'ce': 1.0, 'vat': 1.0}

    ``beta=None`` is the method's own weight (``TrainConfig.beta``'s default). An earlier spelling of a
    method's name (:data:`torchvat.params.METHOD_SPELLINGS`, such as
    ``"vat+at"``) builds the method it names, with a ``DeprecationWarning`` naming the one spelling.
    """
    if name not in _REGISTRY:
        name = params.canonical_method(name, stacklevel=2)
    if "beta" in hparams and hparams["beta"] is None:  # TrainConfig.beta=None: the method's own weight
        del hparams["beta"]
    accepted = method_hyperparameters(name)
    if accepted is not None:
        if strict:
            check_method_options(name, hparams)
        hparams = {k: v for k, v in hparams.items() if k in accepted}
    method = _REGISTRY[name](**hparams)
    if not isinstance(method, Method):
        raise TypeError(
            f"the factory of method {name!r} must return a torchvat.train.Method, got {type(method).__name__}"
        )
    return method
