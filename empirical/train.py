"""Train SimCLR / DirectCLR ResNets with any projector of the paper (Jing et al., ICLR 2022, Tables 1-2).

    python -m empirical.train --help
    torchrun --nproc_per_node K -m empirical.train ...      (DDP, SyncBatchNorm, gathered negatives)

Each step: per-sample augmentation of the global batch (this rank's slice), both views through the
backbone and projector (in one call on CUDA, with view-wise BatchNorm: each view's batch normalized alone,
as the official code), contrastive loss with negatives gathered over ranks, plus the online linear probe on the
detached representation (monitor only). Outputs in --out: config.json, metrics.jsonl, spectra.jsonl,
ckpt-*.pt (last 2), final.pt (model weights), all written atomically; with --monitor-every, monitor.jsonl and
monitor/*.npz (``empirical.xmonitor``: X and the projector's growth rates, read by ``empirical.bridge``).
Exit status: 0 done (or stopped at --stop-at), 2 bad input, 3 diverged (non-finite loss or weights), 130
interrupted (Ctrl-C or SIGTERM: the current step is checkpointed first). One training per --out at a time
(``empirical.runlock``: train.lock, holding the PID and host, while it runs).

As a library: ``config = RunConfig.from_argv(argv)``; ``run = build_run(config)`` (data, schedule, model,
optimizer, scaler, step function, resume state); ``train_loop(run, hooks)`` (``empirical.hooks``: metrics,
monitor and checkpoints are hooks; a test adds its own). ``train(config, hooks)`` is all the command line does
around them: the run lock, Ctrl-C checkpointing, the standard hooks and the summary.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dimcollapse.io import NonFiniteError, UserError, run_cli
from empirical import checkpoint
from empirical.augment import Prefetcher, augment, augment_packed, recipe, view_params
from empirical.config import RunConfig, check_out_dir
from empirical.data import (
    Batch,
    FolderPairs,
    Split,
    folder_batches,
    folder_heldout,
    full_batches,
    load_memory_dataset,
    memory_batches,
)
from empirical.hooks import CheckpointHook, Hook, MetricsHook, MonitorHook
from empirical.interrupt import Interrupted, StopSignals
from empirical.losses import REGISTRY as LOSSES
from empirical.losses import all_gather_with_grad, canonical
from empirical.models import SSLModel
from empirical.optim import build_optimizer, lr_at, set_lr
from empirical.runlock import RunLock
from empirical.syncbn import convert_sync_batchnorm
from empirical.viewwise import stack_views

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def contrastive(loss: str, z1, z2, temperature: float, gather=None):
    return LOSSES[canonical(loss)].fn(z1, z2, temperature, gather)


def step_loss(model, x1, x2, labels, loss: str, temperature: float, gather=None):
    """(contrastive loss, probe loss, probe correct, probe count) of one step; minimize loss + probe."""
    r1, z1, r2, z2, logits = model(x1, x2)
    ssl = contrastive(loss, z1, z2, temperature, gather)
    known = labels >= 0  # stl10's unlabeled images carry -1
    ce = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    count = known.sum()
    probe = (ce * known).sum() / count.clamp(min=1)
    correct = ((logits.argmax(1) == labels) & known).sum()
    return ssl, probe, correct, count


def make_views(
    batch, recipes, size: int, seed: int, global_batch: int, offset: int, channels_last: bool, pre=None
):
    """Both augmented views; parameters drawn for the global batch, this rank keeps [offset, offset+n).

    ``pre``: an ``empirical.augment.Prefetcher`` that drew this step's packed parameters ahead (same views)."""
    crop = not batch.cropped
    if pre is None:
        params = view_params(recipes, seed, batch.step, global_batch, offset, len(batch.x1))
        views = [augment(x, p, size, crop=crop) for p, x in zip(params, (batch.x1, batch.x2), strict=True)]
    else:
        packed = pre.get(batch.step)
        views = [augment_packed(x, q, size, crop=crop) for q, x in zip(packed, (batch.x1, batch.x2), strict=True)]
    return [v.contiguous(memory_format=torch.channels_last) if channels_last else v for v in views]


def train_step(model, optimizer, scaler, loss: str, temperature: float, gather, amp, v1, v2, labels,
               poison: bool = False, before_update=None):
    """The whole step: both views' forward, loss + probe, backward, optimizer update (LARS reads its learning
    rate from a 0-d tensor, so a captured step follows the schedule). No host sync: the capturable unit.

    Returns (ssl, probe, correct, count, seen). The eager-only extras: ``poison`` makes the loss NaN (fault
    injection); ``seen = before_update()`` is called between backward and update (the monitor's trust ratios).
    """
    with torch.autocast(v1.device.type, dtype=amp, enabled=amp is not None):
        ssl, probe, correct, count = step_loss(model, v1, v2, labels, loss, temperature, gather)
    if poison:
        ssl = ssl * float("nan")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(ssl + probe).backward()
    seen = None if before_update is None else before_update()
    scaler.step(optimizer)
    scaler.update()
    return ssl, probe, correct, count, seen


class CompiledOrEager:
    """``torch.compile(fn, mode=mode)``, falling back to eager ``fn`` with a warning when compiling fails on
    the first call (no C compiler, an unsupported operator, ...): a run is never lost to the compiler. The
    first call is all or nothing: the state of ``restore`` (objects with ``state_dict``: model, optimizer,
    scaler) is saved before it and put back if it fails halfway, so the eager retry starts from the same state.
    ``mode`` "none" is ``fn`` itself."""

    def __init__(self, fn, mode: str, restore: tuple = ()):
        self.eager, self.mode, self.restore = fn, mode, restore
        self.fn = fn if mode == "none" else torch.compile(fn, mode=mode)
        self.checked = mode == "none"

    def __call__(self, *args):
        if self.checked:
            return self.fn(*args)
        saved = [copy.deepcopy(o.state_dict()) for o in self.restore]
        try:
            out = self.fn(*args)
        except Exception as e:  # compilation happens here, on the first call
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            warn = f"warning: torch.compile (mode {self.mode}) failed ({msg}); continuing in eager mode"
            print(warn, file=sys.stderr)
            for o, state in zip(self.restore, saved, strict=True):
                o.load_state_dict(state)
            self.fn = self.eager
            out = self.fn(*args)
        self.checked = True
        return out


def cuda_settings(device: torch.device) -> None:
    """On CUDA: autotuned convolutions (fixed shapes every step), TF32 for fp32 matmuls and convolutions."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def views_in_one_call(model: SSLModel, device: torch.device) -> None:
    """On CUDA both views go through the network in one call (view-wise BatchNorm: the official per-view
    statistics), halving the kernel launches of a launch-bound step. On a CPU the convolutions dominate and the
    view-wise BatchNorm's concatenations cost more than one call saves (``bench/train_throughput.py``, tiny
    backbone, batch 64, one thread: one call at 0.79x the two calls' rate; ResNet-18, batch 8: 1.03x), so there
    the views take two calls."""
    if device.type == "cuda":
        stack_views(model)


def lr_tensor(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Each group's learning rate as a 0-d device tensor, filled in place by ``set_lr``: a captured step reads
    the schedule without recompiling."""
    for g in optimizer.param_groups:
        g["lr"] = torch.tensor(float(g["lr"]), device=device)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP without the buffer broadcast before every forward: under DDP every BatchNorm is synchronized, so
    the running statistics are the global batch's on every rank, and the other buffers (the fixed low-rank
    matrix, the random subset's index) are equal on every rank by construction (same seed, same step)."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
    )


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def choose_checkpoint(out: str, rank: int, world: int) -> tuple[str, dict] | None:
    """The checkpoint to resume from: rank 0 picks it (skipping and renaming broken files), every rank loads
    the one it broadcast, so no two ranks race on a broken file or resume from different steps."""
    found = checkpoint.latest(out) if rank == 0 else None
    if world > 1:
        box = [found[0] if found else None]
        dist.broadcast_object_list(box, src=0)
        if rank != 0:
            found = (box[0], checkpoint.load(box[0])) if box[0] else None
    return found


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's steps: per epoch, in all (the learning-rate schedule spans them), of warm-up, and the step this
    invocation stops after (--stop-at, or the end)."""

    steps_per_epoch: int
    total: int
    warmup: int
    stop: int
    base_lr: float

    def lr(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): linear warm-up, then cosine."""
        return lr_at(step, self.base_lr, self.warmup, self.total)

    def log_due(self, done: int, log_every: int) -> bool:
        """Whether a metrics row closes after ``done`` steps (every ``log_every``, each epoch's end, the end)."""
        return done % log_every == 0 or done == self.total or done % self.steps_per_epoch == 0


def make_schedule(config: RunConfig, n_train: int, notes: bool = True) -> Schedule:
    """The schedule of ``config`` on ``n_train`` images; ``notes``: say when --max-steps is capped."""
    steps_per_epoch = n_train // config.batch_size
    if config.full_batch and config.batch_size != n_train:
        raise UserError(f"--full-batch needs --batch-size {n_train} (the training images), got {config.batch_size}")
    if steps_per_epoch < 1:
        raise UserError(f"--batch-size {config.batch_size} is larger than the {n_train} training images")
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        if config.max_steps > total and notes:
            print(
                f"note: --max-steps {config.max_steps} is more than --epochs {config.epochs} x {steps_per_epoch} "
                f"steps per epoch: training {total} steps (raise --epochs for more)",
                file=sys.stderr,
            )
        total = min(total, config.max_steps)
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total)
    stop = total if config.stop_at is None else min(config.stop_at, total)
    return Schedule(steps_per_epoch, total, warmup, stop, config.lr)


@dataclasses.dataclass
class Data:
    """A run's images: the training set (``train`` in memory on the device, or ``folder`` read by loader
    workers), the spectrum's held-out images (``heldout``, at most --spectrum-samples) and the monitor's."""

    n_train: int
    num_classes: int
    heldout: Split
    monitor_images: torch.Tensor
    train: Split | None = None
    folder: FolderPairs | None = None

    def batches(self, config: RunConfig, start: int, stop: int, rank: int, world: int, device) -> Iterator[Batch]:
        """This rank's slice of the global batches of steps [start, stop)."""
        c = config
        if self.folder is not None:
            return folder_batches(
                self.folder, start, stop, c.batch_size, rank, world, c.seed, c.workers, device, c.decode
            )
        if c.full_batch:
            return full_batches(self.train, start, stop)
        return memory_batches(self.train, start, stop, c.batch_size, rank, world, c.seed)


def load_data(config: RunConfig, device: torch.device, notes: bool = True) -> Data:
    """The images of --dataset (in-memory sets moved to ``device``); ``notes``: say when the held-out split is
    smaller than --spectrum-samples."""
    c = config
    if c.dataset == "imagefolder":
        scale_min = recipe(c.augment, c.augment_strength, c.image_size)[0].scale_min
        train_root, val_root = os.path.join(c.data_dir, "train"), os.path.join(c.data_dir, "val")
        folder = FolderPairs(train_root, c.image_size, scale_min)
        held_root = val_root if os.path.isdir(val_root) else train_root
        heldout = folder_heldout(held_root, c.image_size, c.spectrum_samples)
        data = Data(len(folder), folder.num_classes, heldout, heldout.images, folder=folder)
    else:
        train, test, num_classes = load_memory_dataset(c.dataset, c.data_dir, c.image_size)
        train.images, train.labels = train.images.to(device), train.labels.to(device)
        monitor = train.images if c.monitor_images == "train" else test.images
        data = Data(len(train.images), num_classes, test, monitor, train=train)
    held = data.heldout  # the monitor's pairs cycle over every held-out image; the spectrum takes the first
    held.images, held.labels = held.images[: c.spectrum_samples], held.labels[: c.spectrum_samples]
    if len(held.images) < c.spectrum_samples and notes:
        print(
            f"note: the held-out split has {len(held.images)} images, fewer than --spectrum-samples "
            f"{c.spectrum_samples}; the spectrum uses all of them",
            file=sys.stderr,
        )
    return data


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: RunConfig, num_classes: int, device: torch.device, world: int = 1):
    """(model, optimizer, grad scaler) of ``config``: SyncBatchNorm under DDP, both views in one call on CUDA."""
    c = config
    model = SSLModel(c.backbone, c.projector, c.d0, c.cifar_stem, num_classes, c.seed, c.projector_layers).to(device)
    if world > 1:
        model = convert_sync_batchnorm(model, device.type)
    views_in_one_call(model, device)
    if c.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(c.optimizer, model, c.lr, c.weight_decay, momentum=c.momentum, eta=c.eta)
    scaler = torch.amp.GradScaler(device.type, enabled=c.precision == "fp16")
    return model, optimizer, scaler


@dataclasses.dataclass
class Run:
    """Everything a training loop needs (``build_run``). ``model`` is the module itself (weights, checkpoints,
    the monitor), ``net`` what the step runs (``model`` or its DDP wrapper). ``record``: config.json (the
    checkpoint's own record on a resume). ``start``: the first step; ``resume``: the checkpoint's path and
    extras (the open metrics row) when resumed, else empty. ``finished``: why there is nothing to train.
    ``fixed_views``: --full-batch's two views of every training image, augmented once and used at every step."""

    config: RunConfig
    device: torch.device
    rank: int
    world: int
    data: Data
    schedule: Schedule
    model: SSLModel
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None
    recipes: tuple
    record: dict
    start: int = 0
    resume: dict = dataclasses.field(default_factory=dict)
    finished: str | None = None
    eager_step: Callable | None = None
    step_fn: CompiledOrEager | None = None
    prefetcher: Prefetcher | None = None
    fixed_views: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def batches(self) -> Iterator[Batch]:
        """This rank's batches from ``start`` to the schedule's stop (--prefetch: parameters drawn ahead)."""
        c = self.config
        if c.prefetch and not c.full_batch:  # drop-last epochs: every batch has the same rows, as the prefetcher needs
            memory = self.data.train is not None
            src_hw = tuple(self.data.train.images.shape[-2:]) if memory else (c.image_size, c.image_size)
            local = c.batch_size // self.world
            self.prefetcher = Prefetcher(self.recipes, c.seed, c.batch_size, self.rank * local, local, src_hw,
                                         memory, self.device, self.start)  # fmt: skip
        return self.data.batches(c, self.start, self.schedule.stop, self.rank, self.world, self.device)

    def take_step(self, batch: Batch, before_update: Callable | None = None) -> tuple:
        """One training step on ``batch``: learning rate, both views, forward, backward, update. Returns (ssl,
        probe, correct, count, seen); ``before_update`` (eager step): ``seen = before_update()`` before the update."""
        c = self.config
        set_lr(self.optimizer, self.schedule.lr(batch.step))
        if c.projector == "random-subset":
            self.model.projector.set_step(batch.step)
        offset = self.rank * (c.batch_size // self.world)
        if self.fixed_views is not None:
            v1, v2 = self.fixed_views
        else:
            v1, v2 = make_views(batch, self.recipes, c.image_size, c.seed, c.batch_size, offset, c.channels_last,
                                self.prefetcher)  # fmt: skip
        if before_update is not None:
            return self.eager_step(v1, v2, batch.labels, False, before_update)
        return self.step_fn(v1, v2, batch.labels)

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None


def build_run(
    config: RunConfig, rank: int = 0, world: int = 1, device: torch.device | None = None, data: Data | None = None
) -> Run:
    """The run of ``config``: data (``data``, default --dataset loaded), schedule, model, optimizer, scaler,
    step function, and with --resume the newest good checkpoint of --out loaded into them. Writes nothing.
    ``device``: default --device (under DDP, this rank's)."""
    device = torch.device(config.device) if device is None else device
    if config.threads:
        torch.set_num_threads(config.threads)
    cuda_settings(device)
    seed_all(config.seed)
    data = load_data(config, device, rank == 0) if data is None else data
    schedule = make_schedule(config, data.n_train, rank == 0)
    model, optimizer, scaler = build_model(config, data.num_classes, device, world)
    derived = {
        "world_size": world,
        "steps_per_epoch": schedule.steps_per_epoch,
        "total_steps": schedule.total,
        "warmup_steps": schedule.warmup,
        "n_train": data.n_train,
        "width": model.width,
        "torch": torch.__version__,
    }
    recipes = recipe(config.augment, config.augment_strength, config.image_size)
    run = Run(config, device, rank, world, data, schedule, model, model, optimizer, scaler, AMP[config.precision],
              recipes, config.record(**derived))  # fmt: skip
    if config.full_batch:  # drawn from the seed alone, so a resumed run gets the same views
        whole = next(full_batches(data.train, 0, 1))
        run.fixed_views = tuple(make_views(whole, recipes, config.image_size, config.seed, config.batch_size, 0,
                                           config.channels_last))  # fmt: skip
    if config.resume:
        restore(run, derived)
    if config.optimizer == "lars":
        lr_tensor(optimizer, device)
    if world > 1:
        run.net = wrap_ddp(model, device)
    gather = all_gather_with_grad if world > 1 else None
    run.eager_step = functools.partial(
        train_step, run.net, optimizer, scaler, config.loss, config.temperature, gather, run.amp
    )
    run.step_fn = CompiledOrEager(run.eager_step, config.compile_mode, restore=(model, optimizer, scaler))
    return run


def restore(run: Run, derived: dict) -> None:
    """--resume: load the newest good checkpoint of --out into ``run`` (weights, optimizer, scaler, RNG, start),
    or mark a finished run; ``UserError`` when the checkpoint's trajectory differs from the flags'."""
    c = run.config
    found = choose_checkpoint(c.out, run.rank, run.world)
    finished = os.path.exists(os.path.join(c.out, "final.pt"))
    if found is None:
        if finished:  # checkpoints removed by hand: the finished weights are not overwritten
            run.finished = f"{c.out} holds a finished run (final.pt, no checkpoint): nothing to do"
        elif run.main:
            print(f"no checkpoint in {c.out}: starting from scratch", file=sys.stderr)
        return
    path, ckpt = found
    changes = c.trajectory_changes(ckpt["config"], derived)
    if changes:
        raise UserError("--resume with different settings than the checkpoint: " + ", ".join(changes))
    start = ckpt["step"]
    if start >= run.schedule.total and finished:
        run.finished = f"{c.out} is already finished (step {start} of {run.schedule.total}): nothing to do"
        return
    if c.stop_at is not None and c.stop_at < start:
        raise UserError(
            f"--stop-at {c.stop_at} is before the checkpoint to resume from ({path}, step {start}): "
            "nothing to train; give a later --stop-at or none"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scaler.load_state_dict(ckpt["scaler"])
    checkpoint.set_rng_state(ckpt["rng"])
    run.start, run.resume = start, {"path": path, "log_acc": ckpt.get("log_acc")}
    old = ckpt["config"]  # the checked settings stay the run's record; config.json is not rewritten
    run.record = {**old, "loss": canonical(old.get("loss"))}
    if run.main:
        print(f"resumed from {path} at step {start}", file=sys.stderr)


class LoopState:
    """What the loop knows after each step: ``done`` steps taken, the step's outputs ``out``, and the first step
    whose loss (``bad_loss``) or weights (``bad_weights``) went non-finite, kept on the device (no host sync
    until ``check_finite``)."""

    def __init__(self, run: Run, signals: StopSignals | None = None) -> None:
        self.run, self.signals = run, signals
        self.done, self.out = run.start, None
        self.bad_loss = torch.full((), -1, dtype=torch.long, device=run.device)
        self.bad_weights = torch.full((), -1, dtype=torch.long, device=run.device)
        # weights and BN running statistics: eval-mode features overflow when either does
        self.params = [*run.model.parameters(), *(b for b in run.model.buffers() if b.is_floating_point())]
        self.settle: Callable[[], None] = lambda: None  # waits for a checkpoint in flight (CheckpointHook)

    def track(self, step: int) -> None:
        """Note whether step ``step`` left the loss or the weights non-finite (device-side)."""
        ssl, probe = self.out[0].detach(), self.out[1].detach()
        finite = torch.isfinite(ssl) & torch.isfinite(probe)
        self.bad_loss = torch.where(~finite & (self.bad_loss < 0), torch.full_like(self.bad_loss, step), self.bad_loss)
        # sum of the parameter norms: inf/NaN iff some weight is (or overflows); no host sync here
        w_ok = torch.isfinite(torch.stack(torch._foreach_norm(self.params)).sum())
        bad = ~w_ok & (self.bad_weights < 0)
        self.bad_weights = torch.where(bad, torch.full_like(self.bad_weights, step), self.bad_weights)

    def check_finite(self) -> None:
        """Raise NonFiniteError if the loss or the weights went non-finite (one host sync, at log/save time)."""
        b_loss, b_w = int(self.bad_loss), int(self.bad_weights)
        if b_loss < 0 and b_w < 0:
            return
        self.settle()  # a save in flight is of an earlier, good step
        loss_first = b_loss >= 0 and (b_w < 0 or b_loss <= b_w)
        b, what = (b_loss, "loss") if loss_first else (b_w, "weights or BatchNorm statistics")
        good = checkpoint.list_checkpoints(self.run.config.out)
        keep = f"last good checkpoint kept: {good[0]}" if good else "no checkpoint was written before it"
        s = self.run.schedule
        raise NonFiniteError(
            f"non-finite {what} at step {b} of {s.total} (lr {s.lr(b):.3g} there), stopped before step "
            f"{self.done}; {keep}. Likely cause: the learning rate is too high for this batch size and precision; "
            "try a lower --lr, or --precision fp32"
        )


def train_loop(run: Run, hooks: Sequence[Hook], signals: StopSignals | None = None) -> LoopState:
    """Train ``run`` from its start to its schedule's stop: a step per batch, then every hook in order
    (``empirical.hooks``). With ``signals``, a SIGINT / SIGTERM stops it after the step in progress: the hooks'
    ``interrupt`` (the checkpoint) runs, then ``Interrupted`` is raised."""
    state = LoopState(run, signals)
    try:
        run.net.train()
        for hook in hooks:
            hook.start(run, state)
        if signals is not None:
            signals.arm()
        for batch in run.batches():
            state.done = batch.step + 1
            before = next((f for h in hooks if (f := h.before_update(run, state.done)) is not None), None)
            state.out = run.take_step(batch, before)
            state.track(batch.step)
            for hook in hooks:
                hook.after_step(run, state)
            if signals is not None and state.done < run.schedule.stop and _stop_now(signals, run, state.done):
                for hook in hooks:
                    hook.interrupt(run, state)
                path = checkpoint.path_for(run.config.out, state.done)
                raise Interrupted(signals.requested or "signal", state.done, run.schedule.total, path)
        for hook in hooks:
            hook.end(run, state)
    finally:
        run.close()
        for hook in hooks:
            hook.close()
    return state


def _stop_now(signals: StopSignals, run: Run, done: int) -> bool:
    """Whether to stop after step ``done`` on a signal. Alone: at once. Under DDP the ranks agree at the
    metrics rows (every rank passes them; a signal reaches the ranks at different steps, and one rank
    stopping alone would leave the others waiting in a collective)."""
    if run.world == 1:
        return signals.requested is not None
    if not run.schedule.log_due(done, run.config.log_every):
        return False
    flag = torch.tensor(float(signals.requested is not None), device=run.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def _existing_run(out: str) -> bool:
    return os.path.exists(os.path.join(out, "final.pt")) or bool(checkpoint.list_checkpoints(out))


def _first_missing(folder: str) -> str | None:
    """The outermost folder of the path ``folder`` that does not exist yet (None: ``folder`` exists)."""
    missing, path = None, os.path.abspath(folder)
    while not os.path.lexists(path):
        missing, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_if_empty(folder: str, top: str) -> None:
    """A refused or failed training leaves no empty folder behind: ``folder`` and its parents up to ``top``
    (the folders it created itself), as far as they are empty."""
    path = os.path.abspath(folder)
    while True:
        try:
            os.rmdir(path)
        except OSError:  # not empty (the run wrote something worth keeping) or already gone
            return
        if path == top:
            return
        path = os.path.dirname(path)


def init_distributed(config: RunConfig, world: int, local_rank: int) -> torch.device:
    """This process's device; under torchrun (``world`` > 1) also the process group (nccl on CUDA, else gloo)."""
    device = torch.device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def run(argv: list[str] | None = None, hooks: Sequence[Hook] = ()) -> int:
    """Train with the flags ``argv``; the exit status (``dimcollapse.io.EXIT_CODES``). ``hooks`` run after the
    standard ones (metrics, monitor, checkpoints) at every point of the loop."""
    return train(RunConfig.from_argv(argv, _dist_env()[1]), hooks)  # every flag checked before any work


def train(config: RunConfig, hooks: Sequence[Hook] = ()) -> int:
    """The whole training of ``config`` as the command line runs it: the run lock on --out, Ctrl-C / SIGTERM
    checkpointed, ``build_run``, ``train_loop`` with the standard hooks then ``hooks``, the summary; the exit
    status (``dimcollapse.io.EXIT_CODES``)."""
    rank, world, local_rank = _dist_env()
    created = _first_missing(config.out) if rank == 0 else None
    lock = None
    try:
        with StopSignals() as signals:
            if rank == 0:
                check_out_dir(config.out)
                lock = RunLock(config.out)
                lock.acquire()  # before looking at the folder's contents: they may be another run's, in flight
            return _train(config, rank, world, local_rank, signals, hooks)
    except Interrupted as e:
        if rank == 0:
            print(e.message(), file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.release()
        if created is not None:
            _remove_if_empty(config.out, created)


def _train(config: RunConfig, rank: int, world: int, local_rank: int, signals: StopSignals, hooks) -> int:
    """The command line's training into a locked --out: build the run, loop with the standard hooks, summarize."""
    t_start = time.time()
    if not config.resume and _existing_run(config.out):
        raise UserError(
            f"--out {config.out} already holds a run (checkpoints or final.pt): add --resume to continue it, "
            "or choose another --out"
        )
    device = init_distributed(config, world, local_rank)
    run = build_run(config, rank, world, device)
    if run.finished is None:
        metrics = MetricsHook()
        monitor = [MonitorHook(metrics)] if run.main and config.monitor_every else []
        train_loop(run, [metrics, *monitor, CheckpointHook(sources=(metrics,)), *hooks], signals)
        if run.main:
            s = run.schedule
            print(summary(config, run.start, s.stop, s.total, metrics.last, time.time() - t_start,
                          run.data.num_classes, metrics.initial))  # fmt: skip
    elif run.main:
        print(run.finished)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def summary(args, start: int, stop: int, total: int, last: dict, seconds: float, num_classes: int,
            initial: dict | None = None) -> str:
    """The closing paragraph: what ran, where it wrote, the final numbers beside their step-0 values (``initial``,
    when this process started at step 0), what to do next."""
    what = (
        f"trained {args.projector} / {args.backbone} on {args.dataset}: steps {start}-{stop} of {total}"
        f" in {seconds:.0f} s"
    )
    parts = [what + ("." if stop == total else f", stopped at --stop-at {stop}.")]
    if "loss" in last:
        probe = "" if last.get("probe_acc") is None else f", online probe {100 * last['probe_acc']:.1f}% (train)"
        held = last.get("probe_acc_heldout")
        held = "" if held is None else f", {100 * held:.1f}% (held-out)"
        chance = (f" (chance {100 / num_classes:.1f}%; a linear head trained alongside on detached features, one "
                  "step per batch, so near chance early; evaluate's probe is fit to convergence)") if probe else ""
        parts.append(f"Final loss {last['loss']:.4f}{probe}{held}{chance}.")
    if "collapsed_z" in last:
        init = initial or {}

        def at0(key: str) -> str:
            return f" (step 0: {init[key]})" if key in init else ""

        parts.append(
            f"Collapsed dimensions (singular value <= 1e-3 x largest, the first {args.spectrum_samples} held-out "
            f"images, eval-mode features): embedding z {last['collapsed_z']} of {last['dim_z']}{at0('collapsed_z')}, "
            f"representation r {last['collapsed_r']} of {last['dim_r']}{at0('collapsed_r')}; evaluate measures its "
            "own image set, so its counts can differ."
        )
    elif "spectrum_error" in last:
        parts.append(f"The final spectrum failed ({last['spectrum_error']}).")
    files = "config.json, metrics.jsonl, spectra.jsonl, ckpt-*.pt" + (", final.pt" if stop == total else "")
    if args.monitor_every:
        files += ", monitor.jsonl"
    parts.append(f"Wrote {files} to {args.out}.")
    if stop == total:
        parts.append(
            f"Linear probe and spectrum plot: python -m empirical.evaluate {args.out} --plot "
            f"{os.path.join(args.out, 'spectrum.png')}"
        )
    else:
        parts.append("Continue with the same command plus --resume (and a later or no --stop-at).")
    return " ".join(parts)


def main(argv: list[str] | None = None, hooks: tuple = ()) -> int:
    """``python -m empirical.train``: train with the flags ``argv``, return the exit status."""
    hint = "continue with the same command plus --resume"
    return run_cli(functools.partial(run, hooks=hooks), argv, resume_hint=hint)


if __name__ == "__main__":
    sys.exit(main())
