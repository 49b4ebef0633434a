"""Command line of ``python -m empirical.train``: flags, their defaults (the official DirectCLR recipe) and their
checks. Every bad value becomes ``dimcollapse.io.UserError`` (one line, exit status 2) before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from dimcollapse.io import OneLineParser, UserError, check_finite
from empirical.augment import recipe
from empirical.data import DATASETS, DECODES, NATIVE_SIZE
from empirical.losses import ALIASES as LOSS_ALIASES
from empirical.losses import REGISTRY as LOSSES
from empirical.losses import canonical
from empirical.models import BACKBONES, PROJECTORS, WIDTH, default_d0
from empirical.optim import OPTIMIZERS

PRECISIONS = ("bf16", "fp16", "fp32")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # none: eager

EXAMPLES = """\
examples:
  CPU smoke run (~15 s):      python -m empirical.train --dataset digits --epochs 1
  CPU run (~10 min, 2 cores): python -m empirical.train --dataset mnist5k --epochs 10
  DirectCLR, CIFAR-10, GPU:   python -m empirical.train --dataset cifar10 --backbone resnet18 \\
                                --projector directclr --channels-last --out runs/c10-directclr
  8 GPUs:                     torchrun --nproc_per_node 8 -m empirical.train --dataset imagefolder \\
                                --data-dir /data/imagenet --backbone resnet50 --batch-size 4096 --epochs 100
  resume after a crash:       add --resume (same flags, same --out)
  a long run in chunks:       add --stop-at 5000, later --resume --stop-at 10000, ... (same schedule)
  plot the spectra:           python -m empirical.evaluate runs/digits-mlp-s0 --plot spectrum.png
  the theory during training (two commands):
                              python -m empirical.train --dataset mnist5k --loss paper --projector linear \\
                                --optimizer sgd --momentum 0 --lr 0.05 --monitor-every 5 --out runs/b
                              python -m empirical.bridge runs/b --out results/b
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m empirical.train",
        description="Train SimCLR / DirectCLR (Jing et al., ICLR 2022) with any projector of the paper "
        "while watching the embedding spectrum. Defaults: the official recipe on a CPU-sized model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for add in (_data_flags, _model_flags, _optimization_flags, _speed_flags, _run_flags):
        add(p)
    return p


def _data_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset", default="synthetic", choices=DATASETS, help="default: synthetic (no files needed)"
    )
    g.add_argument(
        "--data-dir",
        default="data",
        help="root for cifar10/cifar100/stl10; DIR with train/ (and val/) "
        "class folders for imagefolder (default: ./data)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="backbone input side in px (default: 32 for "
        "cifar/mnist5k/digits/synthetic, 96 for stl10, 224 for imagefolder)",
    )
    g.add_argument(
        "--augment",
        default="paper",
        choices=("paper", "simclr"),
        help="paper: official asymmetric recipe (blur 1.0/0.1, solarize 0/0.2); simclr: symmetric",
    )
    g.add_argument(
        "--augment-strength",
        type=float,
        default=1.0,
        help="multiplies colour-jitter magnitudes and crop severity 1 - scale_min (default 1)",
    )
    g.add_argument("--workers", type=int, default=8, help="DataLoader workers for imagefolder (default 8)")
    g.add_argument(
        "--decode",
        default=None,
        choices=DECODES,
        help="imagefolder: workers = PIL decodes and crops in the workers; device = the workers read the files, "
        "torchvision.io.decode_jpeg decodes each batch on the device (nvJPEG on CUDA) and crops there "
        "(same crop boxes; default: device on CUDA, workers on CPU)",
    )


def _model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--backbone",
        default="tiny",
        choices=BACKBONES,
        help="tiny = 4 BasicBlocks, widths 16-128, for CPUs (default); resnet18/resnet50 = torchvision",
    )
    g.add_argument(
        "--cifar-stem",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="3x3 stride-1 stem, no max-pool (default: on for inputs <= 64 px)",
    )
    g.add_argument(
        "--projector", default="mlp", choices=PROJECTORS, help="see empirical/models.py (default mlp)"
    )
    g.add_argument(
        "--projector-layers",
        type=int,
        default=1,
        help="linear projector only: L bias-free layers, width -> 128 -> ... -> 128 (default 1)",
    )
    g.add_argument(
        "--d0",
        type=int,
        default=None,
        help="sub-space dimension for directclr/fixed-lowrank/random-subset (default round(360/2048*width))",
    )


def _optimization_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loss and optimization")
    g.add_argument(
        "--loss",
        default="info_nce",
        type=canonical,
        choices=tuple(LOSSES),
        help="; ".join(f"{name}: {loss.help}" for name, loss in LOSSES.items())
        + f" ({' / '.join(LOSS_ALIASES)} also accepted; paper and dot are the theory's forms, where -dL/dW = W X "
        "for a linear projector)",
    )
    g.add_argument(
        "--temperature", type=float, default=0.1, help="softmax temperature of info_nce / nt_xent / dot (default 0.1)"
    )
    g.add_argument("--epochs", type=int, default=10, help="default 10")
    g.add_argument("--batch-size", type=int, default=256, help="global batch, split over ranks (default 256)")
    g.add_argument(
        "--full-batch",
        action="store_true",
        help="full-batch gradient descent on a fixed loss: every step is one batch of all the training images in "
        "a fixed order, each with one pair of views augmented once (from --seed) and kept for the whole run; "
        "--batch-size must equal the training set's size, one process only. The monitor then uses exactly "
        "these pairs as one batch, so its X is the step's own (Lemma 2 with no sampling noise)",
    )
    g.add_argument(
        "--optimizer", default="lars", choices=OPTIMIZERS, help="default lars (the official recipe's)"
    )
    g.add_argument(
        "--lr", type=float, default=4.8, help="base learning rate, not scaled by batch (official: 4.8)"
    )
    g.add_argument("--weight-decay", type=float, default=1e-6, help="default 1e-6")
    g.add_argument("--momentum", type=float, default=0.9, help="sgd and lars momentum (default 0.9)")
    g.add_argument("--eta", type=float, default=0.001, help="LARS trust coefficient (default 0.001)")
    g.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="linear warm-up epochs, then cosine to 0.001x (default 10, the official code's; with --epochs "
        "<= 10 the whole run is warm-up)",
    )
    g.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="train this many steps in all, the schedule spanning them (smoke runs); capped at --epochs x "
        "steps per epoch (a larger value trains that many, with a note)",
    )
    g.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop after this step with a checkpoint, without changing the schedule; continue later with "
        "--resume (runs in chunks)",
    )


def _speed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed")
    g.add_argument("--precision", default=None, choices=PRECISIONS, help="default: bf16 on CUDA, fp32 on CPU")
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format (default: on for CUDA, off for CPU)",
    )
    g.add_argument(
        "--compile-mode",
        default=None,
        choices=COMPILE_MODES,
        help="torch.compile mode of the whole training step (default none: eager; reduce-overhead / "
        "max-autotune capture CUDA graphs); if compiling fails, the run warns and continues in eager mode",
    )
    g.add_argument("--compile", action="store_true", help="shorthand for --compile-mode default")
    g.add_argument(
        "--prefetch",
        action="store_true",
        help="draw the next steps' augmentation parameters in a background thread (same views as without)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed", type=int, default=0, help="fixes weights, data order and augmentations (default 0)"
    )
    g.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<projector>-s<seed>)")
    g.add_argument("--resume", action="store_true", help="continue from the latest good checkpoint in --out")
    g.add_argument(
        "--spectrum-every",
        type=int,
        default=100,
        help="steps between embedding spectra in spectra.jsonl (default 100; 0: only at the end)",
    )
    g.add_argument(
        "--spectrum-samples",
        type=int,
        default=None,
        help="held-out images for the spectrum (default and minimum: 2 x the representation width, so the "
        "covariance is not rank-deficient by construction)",
    )
    g.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="steps between metrics.jsonl rows (default 10; a row also ends each epoch)",
    )
    g.add_argument(
        "--monitor-every",
        type=int,
        default=0,
        help="steps between collapse-monitor rows (monitor.jsonl: X, singular values and growth rates of a "
        "linear projector; read by python -m empirical.bridge); 0: off (default)",
    )
    g.add_argument(
        "--monitor-pairs",
        type=int,
        default=None,
        help="held-out augmented pairs the monitor uses, the same at every call (default 32 x --batch-size: "
        "X is estimated on batches of the training size, and the PSD test needs about 32 of them to detect a "
        "negative eigenvalue at the noise edge)",
    )
    g.add_argument(
        "--monitor-images",
        choices=("heldout", "train"),
        default=None,
        help="images the monitor's pairs are drawn from (default heldout; train with --full-batch, which "
        "monitors the training pairs themselves). The held-out split of an in-memory "
        "set may be too small for 32 image-disjoint batches (mnist5k: 1,000 images, 7 batches of 128); 'train' "
        "draws them from the training images, the data the loss's X is about (image folders always use "
        "held-out images)",
    )
    g.add_argument(
        "--checkpoint-every-steps",
        "--ckpt-every",
        dest="checkpoint_every_steps",
        type=int,
        default=0,
        help="checkpoint every N steps (default 0: off)",
    )
    g.add_argument(
        "--checkpoint-every-minutes",
        "--ckpt-minutes",
        dest="checkpoint_every_minutes",
        type=float,
        default=10.0,
        help="checkpoint when this much wall time passed since the last one (default 10; 0: off). A "
        "checkpoint is always written at the end and at --stop-at; writing happens in a background thread",
    )
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    g.add_argument("--no-tensorboard", action="store_true", help="skip TensorBoard even if installed")


def resolve(args: argparse.Namespace, world: int = 1) -> argparse.Namespace:
    """A copy of ``args`` with the automatic defaults filled in and every flag that does not need the data
    checked (``world``: the number of ranks); raise UserError."""
    args = argparse.Namespace(**vars(args))
    _resolve_speed(args)
    _resolve_model(args)
    _check_batch(args, world)
    _check_ranges(args)
    _resolve_monitor(args)
    _resolve_spectrum(args)
    if args.out is None:
        args.out = os.path.join("runs", f"{args.dataset}-{args.projector}-s{args.seed}")
    return args


def _resolve_speed(args: argparse.Namespace) -> None:
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(args.device)
    on_cuda = args.device.startswith("cuda")
    if args.precision is None:
        args.precision = "bf16" if on_cuda else "fp32"
    if args.channels_last is None:
        args.channels_last = on_cuda
    if args.decode is None:
        args.decode = "device" if on_cuda else "workers"
    if args.compile_mode is None:
        args.compile_mode = "default" if args.compile else "none"
    elif args.compile and args.compile_mode == "none":
        raise UserError("--compile contradicts --compile-mode none: give one of them")


def _resolve_model(args: argparse.Namespace) -> None:
    if args.image_size is None:
        args.image_size = NATIVE_SIZE[args.dataset]
    _at_least("--image-size", args.image_size, 8)
    if args.image_size > 1024:
        raise UserError(f"--image-size {args.image_size} is too large (at most 1024)")
    if args.cifar_stem is None:
        args.cifar_stem = args.image_size <= 64
    width = WIDTH[args.backbone]
    if args.d0 is None:
        args.d0 = default_d0(width)
    if not 1 <= args.d0 <= width:
        raise UserError(
            f"--d0 {args.d0} must be between 1 and the {args.backbone} representation width {width}"
        )
    if args.projector_layers > 1 and args.projector != "linear":
        raise UserError(f"--projector-layers {args.projector_layers} needs --projector linear")


def _check_batch(args: argparse.Namespace, world: int) -> None:
    if args.batch_size < 2:
        raise UserError(
            f"--batch-size {args.batch_size}: contrastive learning needs at least 2 images per batch"
        )
    if args.batch_size % world:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by the {world} ranks")
    if args.full_batch and world > 1:
        raise UserError(f"--full-batch runs in one process, got {world} ranks")
    if args.full_batch and args.dataset == "imagefolder":
        raise UserError("--full-batch needs an in-memory --dataset (not imagefolder)")
    if args.batch_size // world < 2 and args.projector == "mlp":
        raise UserError(
            "--batch-size per rank must be at least 2 for the BatchNorm layers of the mlp projector"
        )


# the integer flags and their least values (None: unset is allowed)
LEAST = {
    "epochs": 1,
    "log_every": 1,
    "spectrum_every": 0,
    "checkpoint_every_steps": 0,
    "seed": 0,
    "projector_layers": 1,
    "monitor_every": 0,
    "workers": 0,
    "max_steps": 1,
    "stop_at": 1,
    "threads": 1,
}


def _check_ranges(args: argparse.Namespace) -> None:
    for flag, low in LEAST.items():
        if getattr(args, flag) is not None:
            _at_least("--" + flag.replace("_", "-"), getattr(args, flag), low)
    check_finite("--temperature", args.temperature, 1e-4, 100.0)
    check_finite("--lr", args.lr, 0.0)  # no upper bound: a too-high lr is caught as divergence (exit 3)
    check_finite("--weight-decay", args.weight_decay, 0.0, 1.0)
    check_finite("--momentum", args.momentum, 0.0, 0.999)
    check_finite("--eta", args.eta, 0.0)
    check_finite("--augment-strength", args.augment_strength, 0.0, 10.0)
    check_finite("--checkpoint-every-minutes", args.checkpoint_every_minutes, 0.0)
    try:
        recipe(args.augment, args.augment_strength, args.image_size)
    except ValueError as e:
        raise UserError(f"--augment-strength: {e}") from None
    if args.warmup_epochs is None:
        args.warmup_epochs = 10.0  # the official code: 10 epochs, whatever the run's length
    check_finite("--warmup-epochs", args.warmup_epochs, 0.0)


def _resolve_monitor(args: argparse.Namespace) -> None:
    if args.full_batch:
        _resolve_full_batch_monitor(args)
    if args.monitor_images is None:
        args.monitor_images = "heldout"
    if args.monitor_pairs is None:
        args.monitor_pairs = 32 * args.batch_size
    if not args.monitor_every:
        return
    if LOSSES[args.loss].x_form is None or args.projector != "linear":
        with_x = ", ".join(name for name, loss in LOSSES.items() if loss.x_form)
        raise UserError(
            f"--monitor-every needs --projector linear and --loss {with_x} (X is not defined "
            f"for --projector {args.projector} / --loss {args.loss})"
        )
    if args.monitor_pairs < args.batch_size:
        raise UserError(
            f"--monitor-pairs {args.monitor_pairs} must be at least the batch size {args.batch_size} "
            "(X is estimated on batches of the training size; 32 or more give the PSD test its power)"
        )


def _resolve_full_batch_monitor(args: argparse.Namespace) -> None:
    """--full-batch monitors the step's own pairs: all of them, from the training images."""
    if args.monitor_images == "heldout":
        raise UserError("--monitor-images heldout: with --full-batch the monitor uses the training pairs (train)")
    if args.monitor_pairs not in (None, args.batch_size):
        raise UserError(
            f"--monitor-pairs {args.monitor_pairs}: with --full-batch the monitor uses the {args.batch_size} "
            "training pairs of every step (leave --monitor-pairs out)"
        )
    args.monitor_images, args.monitor_pairs = "train", args.batch_size


def _resolve_spectrum(args: argparse.Namespace) -> None:
    width = WIDTH[args.backbone]
    least = 2 * width
    if args.spectrum_samples is None:
        args.spectrum_samples = least
    elif args.spectrum_samples < least:
        print(
            f"note: --spectrum-samples {args.spectrum_samples} is below 2 x the {args.backbone} width {width}; "
            f"using {least} (fewer images than dimensions make a rank-deficient covariance and spurious "
            "collapsed dimensions)",
            file=sys.stderr,
        )
        args.spectrum_samples = least


def check_device(name: str, flag: str = "--device") -> None:
    """``UserError`` naming ``flag`` unless ``name`` is a device this machine has (``theory.torch_kernel``)."""
    from theory.torch_kernel import check_device as check

    try:
        check(name, flag)
    except ValueError as e:
        raise UserError(str(e)) from None


def _at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise UserError(f"{flag} {value} must be at least {low}")


def check_out_dir(out: str, flag: str = "--out") -> None:
    """Fail now, not after minutes of work, if the folder ``out`` (given by ``flag``) cannot take our files."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"{flag} {out!r} is an existing file, not a folder: choose another {flag}")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{flag} {out!r} is not writable ({e.strerror or e})") from None


# Resolved settings that fix the trajectory: a resume must match the checkpoint's (the schedule's length and
# warm-up in steps, not the raw --epochs / --max-steps / --warmup-epochs that produced them).
TRAJECTORY_KEYS = (
    "dataset",
    "image_size",
    "augment",
    "augment_strength",
    "backbone",
    "cifar_stem",
    "projector",
    "d0",
    "loss",
    "temperature",
    "batch_size",
    "full_batch",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "eta",
    "projector_layers",
    "monitor_every",
    "monitor_pairs",
    "seed",
    "n_train",
    "steps_per_epoch",
    "total_steps",
    "warmup_steps",
)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every flag of a training, resolved and checked: built once from argv (``from_argv``), never changed.

    The fields are the parser's destinations in its order (config.json keeps that order)."""

    dataset: str
    data_dir: str
    image_size: int
    augment: str
    augment_strength: float
    workers: int
    decode: str
    backbone: str
    cifar_stem: bool
    projector: str
    projector_layers: int
    d0: int
    loss: str
    temperature: float
    epochs: int
    batch_size: int
    full_batch: bool
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    eta: float
    warmup_epochs: float
    max_steps: int | None
    stop_at: int | None
    precision: str
    channels_last: bool
    compile_mode: str
    compile: bool
    prefetch: bool
    device: str
    threads: int | None
    seed: int
    out: str
    resume: bool
    spectrum_every: int
    spectrum_samples: int
    log_every: int
    monitor_every: int
    monitor_pairs: int
    monitor_images: str
    checkpoint_every_steps: int
    checkpoint_every_minutes: float
    no_progress: bool
    no_tensorboard: bool

    @classmethod
    def from_argv(cls, argv: list[str] | None = None, world: int = 1) -> RunConfig:
        """Parse and check ``argv`` (``UserError`` / argparse's exit 2 on bad input) for ``world`` ranks."""
        return cls(**vars(resolve(build_parser().parse_args(argv), world)))

    def record(self, **derived) -> dict:
        """The run's record (config.json): every flag, then ``derived`` (sizes fixed by the data and model)."""
        return {**dataclasses.asdict(self), **derived}

    def trajectory_changes(self, old: dict, derived: dict) -> list[str]:
        """The settings fixing the trajectory (``TRAJECTORY_KEYS``) that differ from the record ``old`` of a
        checkpoint, as "flag old -> new"; ``derived`` as in ``record``."""
        new = self.record(**derived)
        old = {**old, "loss": canonical(old.get("loss"))}  # earlier spellings
        return [
            f"{k.replace('_', '-')} {old[k]} -> {new[k]}" for k in TRAJECTORY_KEYS if k in old and old[k] != new[k]
        ]
