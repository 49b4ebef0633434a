"""Train SimCLR / DirectCLR ResNets with any projector of the paper (Jing et al., ICLR 2022, Tables 1-2).

    python -m empirical.train --help
    torchrun --nproc_per_node K -m empirical.train ...      (DDP, SyncBatchNorm, gathered negatives)

Each step: per-sample augmentation of the global batch (this rank's slice), both views through the
backbone and projector (in one call on CUDA, with view-wise BatchNorm: each view's batch normalized alone,
as the official code), contrastive loss with negatives gathered over ranks, plus the online linear probe on the
detached representation (monitor only). Outputs in --out: config.json, metrics.jsonl, spectra.jsonl,
ckpt-*.pt (last 2), final.pt (model weights), all written atomically; with --monitor-every, monitor.jsonl and
monitor/*.npz (``empirical.xmonitor``: X and the projector's growth rates, read by ``empirical.bridge``).
Exit status: 0 done (or stopped at --stop-at), 2 bad input, 3 diverged (non-finite loss or weights), 130 interrupted.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import resource
import sys
import time
import types

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from empirical import checkpoint
from empirical.augment import Prefetcher, augment, augment_packed, recipe, view_params
from empirical.config import LOSS_ALIASES, TRAJECTORY_KEYS, build_parser, check_out_dir, resolve
from empirical.data import FolderPairs, folder_batches, folder_heldout, load_memory_dataset, memory_batches
from empirical.interrupt import Interrupted, StopSignals
from empirical.losses import all_gather_with_grad, dot_loss, info_nce, nt_xent, paper_loss
from empirical.models import SSLModel
from empirical.monitor import spectrum_metrics
from empirical.optim import build_optimizer, lr_at, set_lr
from empirical.runlock import RunLock
from empirical.syncbn import convert_sync_batchnorm
from empirical.viewwise import stack_views
from empirical.xmonitor import MonitorLog, monitor
from theory.io import NonFiniteError, UserError, jsonable, run_cli, write_json

AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
LOGS = ("metrics.jsonl", "spectra.jsonl")
MONITOR_LOSS = {"paper": "paper", "dot": "dot", "info_nce": "cosine"}  # the trainer's loss -> X's form
MONITOR_SEED = 20_221_011  # the held-out pairs: one fixed draw for every run, seed and resume


def contrastive(loss: str, z1, z2, temperature: float, gather=None):
    loss = LOSS_ALIASES.get(loss, loss)
    if loss == "paper":
        return paper_loss(z1, z2, gather=gather)
    fn = {"nt_xent": nt_xent, "dot": dot_loss}.get(loss, info_nce)
    return fn(z1, z2, temperature, gather=gather)


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


def monitor_pairs(images: torch.Tensor, recipes, size: int, n: int, chunk: int = 512) -> tuple[torch.Tensor, ...]:
    """The monitor's fixed held-out pairs: ``n`` augmented pairs of ``images`` (cycled when fewer), drawn once
    from ``MONITOR_SEED`` so that every call, seed and resume sees the same pairs."""
    idx = torch.arange(n, device=images.device) % len(images)
    views = ([], [])
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        params = view_params(recipes, MONITOR_SEED, 0, n, lo, m)
        x = images.index_select(0, idx[lo : lo + m])
        for out, p in zip(views, params, strict=True):
            out.append(augment(x, p, size, crop=True))
    return torch.cat(views[0]), torch.cat(views[1])


@torch.no_grad()
def monitor_features(model: SSLModel, v1: torch.Tensor, v2: torch.Tensor, chunk: int, amp=None):
    """Representations r1, r2 of the pairs as training sees them: BatchNorm in train mode on chunks of the
    global batch, one view at a time (per-view batch statistics, as a training step), as plain BatchNorm
    (synchronized BN would wait for the other ranks), with the running statistics restored afterwards so the
    monitor leaves no trace on the run. Eval mode would use running statistics that lag the weights early in
    training, i.e. other features than the ones whose gradient Lemma 2 describes."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers()] for m in bns]
    was_training = model.training
    plain = torch.nn.modules.batchnorm._BatchNorm.forward
    try:
        model.train()
        for m in bns:
            m.forward = plain.__get__(m)
        out = []
        for v in (v1, v2):
            parts = []
            for lo in range(0, len(v) - chunk + 1, chunk):
                with torch.autocast(v.device.type, dtype=amp, enabled=amp is not None):
                    parts.append(model.backbone(v[lo : lo + chunk]).float())
            out.append(torch.cat(parts))
    finally:
        for m, bufs in zip(bns, saved, strict=True):
            m.__dict__.pop("forward", None)
            for b, old in zip(m.buffers(), bufs, strict=True):
                b.copy_(old)
        model.train(was_training)
    return out[0], out[1]


def lars_trust_ratios(weights: list[torch.Tensor], eta: float, weight_decay: float) -> torch.Tensor:
    """q_l = eta ||W_l|| / ||G_l + wd W_l|| of the update about to be taken (empirical.optim.LARS), on the device."""
    out = []
    for w in weights:
        p_norm, g_norm = w.detach().norm(), (w.grad + weight_decay * w.detach()).norm()
        one = torch.ones_like(p_norm)
        out.append(torch.where((p_norm > 0) & (g_norm > 0), eta * p_norm / torch.where(g_norm > 0, g_norm, one), one))
    return torch.stack(out)


def _dist_env() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


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


def truncate_log(path: str, step: int) -> int:
    """Keep the rows of a .jsonl log with ``step`` <= ``step`` (a resume replays the rest); atomic rewrite.

    A torn last line (a crash mid-write) is dropped too. Returns the number of rows dropped.
    """
    if not os.path.exists(path):
        return 0
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if row.get("step", 0) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return dropped


def _stop_now(signals: StopSignals, world: int, device: torch.device, sync_point: bool) -> bool:
    """Whether to stop after this step on a signal. Alone: at once. Under DDP the ranks agree at the log steps
    (every rank passes them; a signal reaches the ranks at different steps, and one rank stopping alone would
    leave the others waiting in a collective)."""
    if world == 1:
        return signals.requested is not None
    if not sync_point:
        return False
    flag = torch.tensor(float(signals.requested is not None), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def _existing_run(out: str) -> bool:
    return os.path.exists(os.path.join(out, "final.pt")) or bool(checkpoint.list_checkpoints(out))


def _remove_if_empty(folder: str) -> None:
    """A refused or failed training leaves no empty folder behind (one it created itself)."""
    try:
        os.rmdir(folder)
    except OSError:  # not empty (the run wrote something worth keeping) or already gone
        pass


def run(argv: list[str] | None = None, hooks: tuple = ()) -> int:
    """Train with the flags ``argv``; the exit status (``theory.io.EXIT_CODES``). ``hooks``: see ``_train``."""
    args = build_parser().parse_args(argv)
    rank, world, local_rank = _dist_env()
    args = resolve(args, world)  # every flag checked before any work
    created = rank == 0 and not os.path.lexists(args.out)
    lock = None
    try:
        with StopSignals() as stop:
            if rank == 0:
                check_out_dir(args.out)
                lock = RunLock(args.out)
                lock.acquire()  # before looking at the folder's contents: they may be another run's, in flight
            return _train(args, rank, world, local_rank, stop, hooks)
    except Interrupted as e:
        if rank == 0:
            print(e.message(), file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.release()
        if created:
            _remove_if_empty(args.out)


def _train(args, rank: int, world: int, local_rank: int, signals: StopSignals, hooks: tuple = ()) -> int:
    main_rank = rank == 0
    if not args.resume and _existing_run(args.out):
        raise UserError(
            f"--out {args.out} already holds a run (checkpoints or final.pt): add --resume to continue it, "
            "or choose another --out"
        )
    t_start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda_settings(device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ---- data ----
    scale_min = recipe(args.augment, args.augment_strength, args.image_size)[0].scale_min
    if args.dataset == "imagefolder":
        train_root = os.path.join(args.data_dir, "train")
        folder = FolderPairs(train_root, args.image_size, scale_min)
        val_root = os.path.join(args.data_dir, "val")
        heldout = folder_heldout(
            val_root if os.path.isdir(val_root) else train_root, args.image_size, args.spectrum_samples
        )
        n_train, num_classes = len(folder), folder.num_classes
    else:
        train, test, num_classes = load_memory_dataset(args.dataset, args.data_dir, args.image_size)
        train.images, train.labels = train.images.to(device), train.labels.to(device)
        heldout = test
        n_train = len(train.images)
    monitor_images = heldout.images  # the monitor's pairs: every held-out image, cycled
    heldout.images = heldout.images[: args.spectrum_samples]
    heldout.labels = heldout.labels[: args.spectrum_samples]
    if len(heldout.images) < args.spectrum_samples and main_rank:
        print(
            f"note: the held-out split has {len(heldout.images)} images, fewer than --spectrum-samples "
            f"{args.spectrum_samples}; the spectrum uses all of them",
            file=sys.stderr,
        )
    steps_per_epoch = n_train // args.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"--batch-size {args.batch_size} is larger than the {n_train} training images")
    total = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        if args.max_steps > total and main_rank:
            print(
                f"note: --max-steps {args.max_steps} is more than --epochs {args.epochs} x {steps_per_epoch} steps "
                f"per epoch: training {total} steps (raise --epochs for more)",
                file=sys.stderr,
            )
        total = min(total, args.max_steps)
    warmup = min(round(args.warmup_epochs * steps_per_epoch), total)
    stop = total if args.stop_at is None else min(args.stop_at, total)

    # ---- model, optimizer ----
    model = SSLModel(
        args.backbone, args.projector, args.d0, args.cifar_stem, num_classes, args.seed, args.projector_layers
    ).to(device)
    if world > 1:
        model = convert_sync_batchnorm(model, device.type)
    views_in_one_call(model, device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        args.optimizer, model, args.lr, args.weight_decay, momentum=args.momentum, eta=args.eta
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    config = {
        **vars(args),
        "world_size": world,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "warmup_steps": warmup,
        "n_train": n_train,
        "width": model.width,
        "torch": torch.__version__,
    }
    start, resume_acc = 0, None
    found = choose_checkpoint(args.out, rank, world) if args.resume else None
    if args.resume and found is None and os.path.exists(os.path.join(args.out, "final.pt")):
        if main_rank:  # checkpoints removed by hand: the finished weights are not overwritten
            print(f"{args.out} holds a finished run (final.pt, no checkpoint): nothing to do")
        if world > 1:
            dist.destroy_process_group()
        return 0
    if args.resume and found is None and main_rank:
        print(f"no checkpoint in {args.out}: starting from scratch", file=sys.stderr)
    if found is not None:
        path, ckpt = found
        old = {**ckpt["config"]}
        old["loss"] = LOSS_ALIASES.get(old.get("loss"), old.get("loss"))  # runs saved with the earlier spelling
        diff = [k for k in TRAJECTORY_KEYS if k in old and old[k] != config[k]]
        if diff:
            raise UserError(
                "--resume with different settings than the checkpoint: "
                + ", ".join(f"{k.replace('_', '-')} {old[k]} -> {config[k]}" for k in diff)
            )
        start = ckpt["step"]
        if start >= total and os.path.exists(os.path.join(args.out, "final.pt")):
            if main_rank:
                print(f"{args.out} is already finished (step {start} of {total}): nothing to do")
            if world > 1:
                dist.destroy_process_group()
            return 0
        if args.stop_at is not None and args.stop_at < start:
            raise UserError(
                f"--stop-at {args.stop_at} is before the checkpoint to resume from ({path}, step {start}): "
                "nothing to train; give a later --stop-at or none"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        checkpoint.set_rng_state(ckpt["rng"])
        resume_acc = ckpt.get("log_acc")
        config = old  # the checked settings stay the run's record; config.json is not rewritten
        found, ckpt = path, None  # drop the loaded state
        if main_rank:
            print(f"resumed from {path} at step {start}", file=sys.stderr)
    if args.optimizer == "lars":
        lr_tensor(optimizer, device)
    raw = model
    if world > 1:
        model = wrap_ddp(model, device)
    gather = all_gather_with_grad if world > 1 else None
    amp = AMP[args.precision]
    eager_step = functools.partial(
        train_step, model, optimizer, scaler, args.loss, args.temperature, gather, amp
    )
    step_fn = CompiledOrEager(eager_step, args.compile_mode, restore=(raw, optimizer, scaler))

    # ---- logging ----
    writer = None
    if main_rank:
        if found is None or not os.path.exists(os.path.join(args.out, "config.json")):
            write_json(os.path.join(args.out, "config.json"), config, indent=2)
        for name in LOGS:  # rows after the checkpoint are replayed by this run: no duplicates
            truncate_log(os.path.join(args.out, name), start)
        if not args.no_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(os.path.join(args.out, "tb"), purge_step=start + 1)
            except ImportError:
                pass
    metrics_f = open(os.path.join(args.out, "metrics.jsonl"), "a") if main_rank else None
    spectra_f = open(os.path.join(args.out, "spectra.jsonl"), "a") if main_rank else None
    last: dict = {}  # the latest metrics row and spectrum scalars, for the closing summary

    def log(row: dict) -> None:
        metrics_f.write(json.dumps(jsonable(row), allow_nan=False) + "\n")
        metrics_f.flush()
        last.update(row)
        if writer is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "step":
                    writer.add_scalar(k, v, row["step"])

    def spectrum_row(step: int) -> dict:
        """Spectrum scalars; a failure here is reported and logged but never stops the training."""
        try:
            scalars, spectra = spectrum_metrics(raw, heldout.images, heldout.labels, amp, args.channels_last)
        except Exception as e:  # the monitor must not cost the run (any error: shapes, memory, linalg)
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"warning: spectrum at step {step} failed ({msg}); training continues", file=sys.stderr)
            return {"spectrum_error": msg}
        spectra_f.write(json.dumps(jsonable({"step": step, **spectra}), allow_nan=False) + "\n")
        spectra_f.flush()
        return scalars

    mlog, pairs = None, None
    if main_rank and args.monitor_every:
        mlog = MonitorLog(args.out, resume_step=start if found is not None else -1)
        recipes_m = recipe(args.augment, args.augment_strength, args.image_size)
        pairs = monitor_pairs(monitor_images.to(device), recipes_m, args.image_size, args.monitor_pairs)
        if args.channels_last:
            pairs = tuple(v.contiguous(memory_format=torch.channels_last) for v in pairs)
    want_trust = args.optimizer == "lars" and args.precision != "fp16"  # fp16 grads are loss-scaled

    def monitor_row(step: int, trust: torch.Tensor | None) -> None:
        """One monitor.jsonl row; a failure is reported and logged but never stops the training."""
        try:
            r1, r2 = monitor_features(raw, *pairs, args.batch_size, amp)
            res = monitor(
                r1,
                r2,
                [w.detach() for w in raw.projector_weights()],
                loss=MONITOR_LOSS[args.loss],
                temperature=args.temperature,
                batch_size=args.batch_size,
                symmetric=args.loss == "info_nce",
            )
            extra = {} if trust is None else {"trust_ratio": trust.tolist()}
            mlog.write(step, res, lr=lr_at(step, args.lr, warmup, total), **extra)
        except Exception as e:  # the monitor must not cost the run (any error: shapes, memory, linalg)
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"warning: monitor at step {step} failed ({msg}); training continues", file=sys.stderr)
            log({"step": step, "epoch": step / steps_per_epoch, "monitor_error": msg})

    saver = checkpoint.AsyncSaver()

    def save(step: int) -> None:
        if main_rank:
            payload = {
                "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": checkpoint.rng_state(),
                "config": config,
                "epoch": step // steps_per_epoch,
                "log_acc": (acc_sum, last_log_step),  # the open metrics row: a resume continues it exactly
            }
            saver.save(args.out, step, payload)

    # ---- loop ----
    from tqdm import tqdm

    recipes = recipe(args.augment, args.augment_strength, args.image_size)
    local = args.batch_size // world
    if args.dataset == "imagefolder":
        batches = folder_batches(
            folder, start, stop, args.batch_size, rank, world, args.seed, args.workers, device, args.decode
        )
    else:
        batches = memory_batches(train, start, stop, args.batch_size, rank, world, args.seed)
    pre = None
    if args.prefetch:  # every batch has the same rows (drop-last epochs), as the prefetcher needs
        folder_input = args.dataset == "imagefolder"
        src_hw = (args.image_size, args.image_size) if folder_input else tuple(train.images.shape[-2:])
        pre = Prefetcher(recipes, args.seed, args.batch_size, rank * local, local, src_hw, not folder_input,
                         device, start)
    bar = tqdm(
        total=stop,
        initial=start,
        disable=not main_rank or args.no_progress,
        dynamic_ncols=True,
        desc=f"{args.projector}/{args.loss}",
    )
    # weights and BN running statistics: eval-mode features overflow when either does
    params = [*raw.parameters(), *(b for b in raw.buffers() if b.is_floating_point())]
    bad_loss = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
    bad_weights = torch.full((), -1, dtype=torch.long, device=device)  # first step leaving weights/BN stats non-finite
    acc_sum = torch.zeros(3, device=device)  # loss sum, probe correct, probe count since the last log row
    last_log_t, last_log_step, last_ckpt_t = time.time(), start, time.time()
    if resume_acc is not None:
        acc_sum.copy_(resume_acc[0])
        last_log_step = resume_acc[1]
    view = types.SimpleNamespace(model=raw, saver=saver, out=args.out, signals=signals)  # what hooks may look at
    model.train()
    signals.arm()
    if mlog is not None and start == 0:
        monitor_row(0, None)

    def check_finite(step_done: int) -> None:
        """Raise NonFiniteError if the loss or the weights went non-finite (one host sync, at log/save time)."""
        b_loss, b_w = int(bad_loss), int(bad_weights)
        if b_loss < 0 and b_w < 0:
            return
        saver.wait()  # a save in flight is of an earlier, good step
        loss_first = b_loss >= 0 and (b_w < 0 or b_loss <= b_w)
        b, what = (b_loss, "loss") if loss_first else (b_w, "weights or BatchNorm statistics")
        good = checkpoint.list_checkpoints(args.out)
        keep = f"last good checkpoint kept: {good[0]}" if good else "no checkpoint was written before it"
        raise NonFiniteError(
            f"non-finite {what} at step {b} of {total} (lr {lr_at(b, args.lr, warmup, total):.3g} there), "
            f"stopped before step {step_done}; {keep}. Likely cause: the learning rate is too high for "
            "this batch size and precision; try a lower --lr, or --precision fp32"
        )

    for batch in batches:
        step = batch.step
        lr = lr_at(step, args.lr, warmup, total)
        set_lr(optimizer, lr)
        if args.projector == "random-subset":
            raw.projector.set_step(step)
        v1, v2 = make_views(
            batch, recipes, args.image_size, args.seed, args.batch_size, rank * local, args.channels_last, pre
        )
        done = step + 1
        monitor_now = mlog is not None and (done % args.monitor_every == 0 or done == total)
        if monitor_now and want_trust:  # eager: the trust ratios of the update, taken between backward and it
            def trust_now():
                return lars_trust_ratios(raw.projector_weights(), args.eta, args.weight_decay)

            ssl, probe, correct, count, trust = eager_step(
                v1, v2, batch.labels, False, trust_now
            )
        else:
            ssl, probe, correct, count, trust = step_fn(v1, v2, batch.labels)
        finite = torch.isfinite(ssl.detach()) & torch.isfinite(probe.detach())
        bad_loss = torch.where(~finite & (bad_loss < 0), torch.full_like(bad_loss, step), bad_loss)
        # sum of the parameter norms: inf/NaN iff some weight is (or overflows); no host sync here
        w_ok = torch.isfinite(torch.stack(torch._foreach_norm(params)).sum())
        bad_weights = torch.where(~w_ok & (bad_weights < 0), torch.full_like(bad_weights, step), bad_weights)
        acc_sum += torch.stack([ssl.detach().float(), correct.float(), count.float()])
        bar.update(1)
        if monitor_now:
            monitor_row(done, trust)
        log_now = done % args.log_every == 0 or done == total or done % steps_per_epoch == 0
        if log_now:
            check_finite(done)
            if main_rank:
                now = time.time()
                s = acc_sum.tolist()
                n_steps = done - last_log_step
                img_s = n_steps * args.batch_size / max(now - last_log_t, 1e-9)
                row = {
                    "step": done,
                    "epoch": done / steps_per_epoch,
                    "loss": s[0] / n_steps,
                    "lr": lr,
                    "probe_acc": s[1] / s[2] if s[2] else None,
                    "img_per_s": img_s,
                    "views_per_s": 2 * img_s,
                    "peak_mem_mb": _peak_mem_mb(device),
                }
                if (args.spectrum_every and done % args.spectrum_every == 0) or done == total:
                    row.update(spectrum_row(done))
                log(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{img_s:.0f}")
                last_log_t = time.time()
            acc_sum.zero_()
            last_log_step = done
        elif main_rank and args.spectrum_every and done % args.spectrum_every == 0:
            log({"step": done, "epoch": done / steps_per_epoch, **spectrum_row(done)})
        timed = args.checkpoint_every_minutes > 0 and time.time() - last_ckpt_t > 60 * args.checkpoint_every_minutes
        if done == stop or timed or (args.checkpoint_every_steps and done % args.checkpoint_every_steps == 0):
            check_finite(done)
            save(done)
            last_ckpt_t = time.time()
            saved = True
        else:
            saved = False
        for hook in hooks:
            hook.after_step(done, view)
        if done < stop and _stop_now(signals, world, device, log_now):
            if not saved:
                check_finite(done)
                save(done)
            saver.wait()
            raise Interrupted(signals.requested or "signal", done, total, checkpoint.path_for(args.out, done))
    bar.close()
    if pre is not None:
        pre.close()
    check_finite(stop)
    saver.wait()
    if main_rank:
        if stop == total:
            checkpoint.atomic_save(raw.state_dict(), os.path.join(args.out, "final.pt"))
        metrics_f.close()
        spectra_f.close()
        if writer is not None:
            writer.close()
        print(summary(args, start, stop, total, last, time.time() - t_start, num_classes))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def summary(args, start: int, stop: int, total: int, last: dict, seconds: float, num_classes: int) -> str:
    """The closing paragraph: what ran, where it wrote, the final numbers, what to do next."""
    what = (
        f"trained {args.projector} / {args.backbone} on {args.dataset}: steps {start}-{stop} of {total}"
        f" in {seconds:.0f} s"
    )
    parts = [what + ("." if stop == total else f", stopped at --stop-at {stop}.")]
    if "loss" in last:
        probe = "" if last.get("probe_acc") is None else f", online probe {100 * last['probe_acc']:.1f}% (train)"
        held = last.get("probe_acc_heldout")
        held = "" if held is None else f", {100 * held:.1f}% (held-out)"
        chance = f" (chance {100 / num_classes:.1f}%)" if probe else ""
        parts.append(f"Final loss {last['loss']:.4f}{probe}{held}{chance}.")
    if "collapsed_z" in last:
        parts.append(
            f"Collapsed dimensions (singular value <= 1e-3 x largest, {args.spectrum_samples} held-out images): "
            f"embedding z {last['collapsed_z']} of {last['dim_z']}, representation r {last['collapsed_r']} "
            f"of {last['dim_r']}."
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
