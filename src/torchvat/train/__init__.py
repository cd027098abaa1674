"""Training: one trainer for supervised, RPT, AT, VAT, VAT+EntMin and AT+VAT.

- :class:`Trainer`, :class:`TrainConfig`, :class:`TrainResult`: the loop and its options.
- :class:`Method` and :func:`register_method` / :func:`get_method` /
  :func:`available_methods`: training modes as small objects returning named loss terms.
- :class:`Callback` and the built-in :class:`ProgressBar`, :class:`JSONLogger`,
  :class:`Checkpoint`, :class:`TensorBoardLogger`.
- :func:`save_checkpoint` / :func:`load_checkpoint` (atomic writes, ``weights_only`` loads),
  :func:`select_device`, :func:`seed_everything`.
- :class:`WeightEMA`: the exponential moving average of the weights (``Trainer(ema=0.999)``).
- :func:`compute_method_loss`: the forward half of one training step (clean passes, the
  method's terms, their weighted sum), shared with the Lightning integration.
- :mod:`torchvat.train.distributed`: data-parallel helpers (``torchrun``, DDP, sharded batches).
"""

from torchvat.train.callbacks import (
    Callback,
    Checkpoint,
    JSONLogger,
    ProgressBar,
    TensorBoardLogger,
    is_main_process,
)
from torchvat.train.checkpoint import (
    CheckpointError,
    check_output_dir,
    get_rng_state,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    seed_everything,
    select_device,
    set_rng_state,
)
from torchvat.train.config import TrainConfig
from torchvat.train.ema import WeightEMA
from torchvat.train.methods import (
    TRADES,
    AdversarialTraining,
    AdversarialVAT,
    Batch,
    CleanPass,
    Method,
    PGDAdversarialTraining,
    RandomPerturbationTraining,
    Supervised,
    VATEntMin,
    VirtualAdversarialTraining,
    available_methods,
    check_method_options,
    get_method,
    method_hyperparameters,
    register_method,
    unregister_method,
)
from torchvat.train.optim import IterationSchedule, build_optimizer, warmup_factor
from torchvat.train.trainer import CollapseWarning, NonFiniteLossError, Trainer, TrainResult, compute_method_loss

__all__ = [
    "TRADES",
    "AdversarialTraining",
    "AdversarialVAT",
    "Batch",
    "Callback",
    "Checkpoint",
    "CheckpointError",
    "CleanPass",
    "CollapseWarning",
    "IterationSchedule",
    "JSONLogger",
    "Method",
    "NonFiniteLossError",
    "PGDAdversarialTraining",
    "ProgressBar",
    "RandomPerturbationTraining",
    "Supervised",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "VATEntMin",
    "VirtualAdversarialTraining",
    "WeightEMA",
    "available_methods",
    "build_optimizer",
    "check_method_options",
    "check_output_dir",
    "compute_method_loss",
    "get_method",
    "get_rng_state",
    "is_main_process",
    "load_checkpoint",
    "load_latest_checkpoint",
    "method_hyperparameters",
    "register_method",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "set_rng_state",
    "unregister_method",
    "warmup_factor",
]
