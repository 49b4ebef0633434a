"""What the training loop does besides stepping, as hooks with their own state: metrics and spectra
(``MetricsHook``), the collapse monitor (``MonitorHook``), checkpoints (``CheckpointHook``).

The loop (``empirical.train.train_loop``) calls every hook at the same points, in list order:
``start(run, state)`` once; ``before_update(run, done)`` before each step (a callable returned by a hook runs
between backward and the optimizer update, in the eager step); ``after_step(run, state)`` after it;
``interrupt(run, state)`` when a signal stops the loop; ``end(run, state)`` after the last step; ``close()``
always. ``run`` is an ``empirical.train.Run``, ``state`` its ``LoopState`` (``done``: steps taken; ``out``: the
step's (ssl, probe, correct, count, seen)). A test installs its own hook the same way (fault injection).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch

from dimcollapse.io import jsonable, write_json
from empirical import checkpoint
from empirical.augment import augment, view_params
from empirical.losses import REGISTRY as LOSSES
from empirical.monitor import spectrum_metrics
from empirical.optim import trust_ratio
from empirical.xmonitor import MonitorLog, monitor

LOGS = ("metrics.jsonl", "spectra.jsonl")
MONITOR_SEED = 20_221_011  # the held-out pairs: one fixed draw for every run, seed and resume


class Hook:
    """A no-op at every point of the loop; subclasses override the points they need."""

    def start(self, run, state) -> None:
        pass

    def before_update(self, run, done: int):
        return None

    def after_step(self, run, state) -> None:
        pass

    def interrupt(self, run, state) -> None:
        pass

    def end(self, run, state) -> None:
        pass

    def close(self) -> None:
        pass


def _warn(what: str, step: int, e: Exception) -> str:
    """Report a failing measurement on stderr (training goes on); the one-line reason, for the logs."""
    msg = f"{type(e).__name__}: {e}".splitlines()[0]
    print(f"warning: {what} at step {step} failed ({msg}); training continues", file=sys.stderr)
    return msg


def peak_mem_mb(device: torch.device) -> float:
    """CUDA allocator peak on GPUs, the process's max RSS elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class MetricsHook(Hook):
    """metrics.jsonl (a row every --log-every steps and at each epoch end: mean loss, lr, probe accuracy,
    throughput), spectra.jsonl (at step 0, every --spectrum-every steps and at the end), TensorBoard and the
    progress bar.
    Owns the open row's sums, which a checkpoint carries (``checkpoint_state``) so a resume continues it exactly;
    rows after the resumed checkpoint are dropped first (the run writes them again)."""

    def __init__(self) -> None:
        self.files: dict = {}
        self.writer = None
        self.bar = None
        self.last: dict = {}  # the latest row's values, for the closing summary
        self.initial: dict = {}  # the step-0 spectrum's scalars: the baseline of every collapsed count
        self.acc: torch.Tensor | None = None  # loss sum, probe correct, probe count since the last row
        self.last_step, self.last_t = 0, 0.0

    def start(self, run, state) -> None:
        self.acc = torch.zeros(3, device=run.device)
        self.last_step, self.last_t = run.start, time.time()
        resumed = run.resume.get("log_acc")
        if resumed is not None:
            self.acc.copy_(resumed[0])
            self.last_step = resumed[1]
        if run.main:
            self._open(run)
            if run.start == 0:  # eval mode, no gradients, no random numbers: the trajectory is unchanged
                self.initial = self.spectrum(run, 0)
        from tqdm import tqdm

        c = run.config
        self.bar = tqdm(total=run.schedule.stop, initial=run.start, disable=not run.main or c.no_progress,
                        dynamic_ncols=True, desc=f"{c.projector}/{c.loss}")  # fmt: skip

    def _open(self, run) -> None:
        out = run.config.out
        if not run.resume or not os.path.exists(os.path.join(out, "config.json")):
            write_json(os.path.join(out, "config.json"), run.record, indent=2)
        for name in LOGS:  # rows after the checkpoint are replayed by this run: no duplicates
            checkpoint.truncate_log(os.path.join(out, name), run.start)
        if not run.config.no_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(out, "tb"), purge_step=run.start + 1)
            except ImportError:
                pass
        self.files = {name: open(os.path.join(out, name), "a") for name in LOGS}

    def after_step(self, run, state) -> None:
        ssl, _, correct, count, _ = state.out
        self.acc += torch.stack([ssl.detach().float(), correct.float(), count.float()])
        self.bar.update(1)
        c, done = run.config, state.done
        spectrum_due = c.spectrum_every and done % c.spectrum_every == 0
        if run.schedule.log_due(done, c.log_every):
            state.check_finite()
            if run.main:
                self._row(run, done, spectrum_due or done == run.schedule.total)
            self.acc.zero_()
            self.last_step = done
        elif run.main and spectrum_due:
            self.log({"step": done, "epoch": done / run.schedule.steps_per_epoch, **self.spectrum(run, done)})

    def _row(self, run, done: int, with_spectrum: bool) -> None:
        now, s = time.time(), self.acc.tolist()
        n_steps = done - self.last_step
        img_s = n_steps * run.config.batch_size / max(now - self.last_t, 1e-9)
        row = {
            "step": done,
            "epoch": done / run.schedule.steps_per_epoch,
            "loss": s[0] / n_steps,
            "lr": run.schedule.lr(done - 1),
            "probe_acc": s[1] / s[2] if s[2] else None,
            "img_per_s": img_s,
            "views_per_s": 2 * img_s,
            "peak_mem_mb": peak_mem_mb(run.device),
        }
        if with_spectrum:
            row.update(self.spectrum(run, done))
        self.log(row)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{img_s:.0f}")
        self.last_t = time.time()

    def log(self, row: dict) -> None:
        """Append ``row`` to metrics.jsonl (strict JSON) and TensorBoard."""
        f = self.files["metrics.jsonl"]
        f.write(json.dumps(jsonable(row), allow_nan=False) + "\n")
        f.flush()
        self.last.update(row)
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "step":
                    self.writer.add_scalar(k, v, row["step"])

    def spectrum(self, run, step: int) -> dict:
        """Spectrum scalars, the full spectra to spectra.jsonl; a failure is reported and logged, never fatal."""
        held = run.data.heldout
        try:
            scalars, spectra = spectrum_metrics(run.model, held.images, held.labels, run.amp, run.config.channels_last)
        except Exception as e:  # the measurement must not cost the run (any error: shapes, memory, linalg)
            return {"spectrum_error": _warn("spectrum", step, e)}
        f = self.files["spectra.jsonl"]
        f.write(json.dumps(jsonable({"step": step, **spectra}), allow_nan=False) + "\n")
        f.flush()
        return scalars

    def checkpoint_state(self) -> dict:
        return {"log_acc": (self.acc, self.last_step)}  # the open row: a resume continues it exactly

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for f in self.files.values():
            f.close()
        self.files = {}
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class CheckpointHook(Hook):
    """ckpt-*.pt (written in a background thread) at --stop-at and the end of the schedule, every
    --checkpoint-every-steps, every --checkpoint-every-minutes of wall time, and at once on a signal; final.pt
    (the weights) when the schedule is done. ``sources``: hooks whose ``checkpoint_state()`` goes in too."""

    def __init__(self, sources: tuple = ()) -> None:
        self.saver = checkpoint.AsyncSaver()
        self.sources = sources
        self.last_t = time.time()
        self.saved_at = -1

    def start(self, run, state) -> None:
        state.settle = self.saver.wait  # a divergence report names the last checkpoint on disk
        self.last_t = time.time()

    def after_step(self, run, state) -> None:
        c, done = run.config, state.done
        timed = c.checkpoint_every_minutes > 0 and time.time() - self.last_t > 60 * c.checkpoint_every_minutes
        if done == run.schedule.stop or timed or (c.checkpoint_every_steps and done % c.checkpoint_every_steps == 0):
            self.save(run, state)

    def save(self, run, state) -> None:
        """The checkpoint of step ``state.done`` (after checking the run has not diverged)."""
        state.check_finite()
        if run.main:
            payload = {
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scaler": run.scaler.state_dict(),
                "rng": checkpoint.rng_state(),
                "config": run.record,
                "epoch": state.done // run.schedule.steps_per_epoch,
            }
            for source in self.sources:
                payload.update(source.checkpoint_state())
            self.saver.save(run.config.out, state.done, payload)
        self.saved_at, self.last_t = state.done, time.time()

    def interrupt(self, run, state) -> None:
        if self.saved_at != state.done:
            self.save(run, state)
        self.saver.wait()

    def end(self, run, state) -> None:
        state.check_finite()
        self.saver.wait()
        if run.main and run.schedule.stop == run.schedule.total:
            checkpoint.atomic_save(run.model.state_dict(), os.path.join(run.config.out, "final.pt"))

    def close(self) -> None:
        try:  # a write in flight finishes (or fails) before the process goes
            self.saver.wait()
        except Exception:
            pass


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
def monitor_features(model, v1: torch.Tensor, v2: torch.Tensor, chunk: int, amp=None):
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
    """q_l of the update about to be taken (``empirical.optim.LARS``: its gradient with weight decay), on the device."""
    p_norm = torch.stack([w.detach().norm() for w in weights])
    g_norm = torch.stack([(w.grad + weight_decay * w.detach()).norm() for w in weights])
    return trust_ratio(p_norm, g_norm, eta)


class MonitorHook(Hook):
    """The collapse monitor (--monitor-every, main rank): a monitor.jsonl row (X, the linear projector's
    singular values and growth rates, ``empirical.xmonitor``) on fixed held-out pairs at step 0, every
    --monitor-every steps and at the end, with LARS's trust ratios of the update taken there (the eager step
    computes them between backward and the update). A failure is reported and logged to ``metrics``."""

    def __init__(self, metrics: MetricsHook) -> None:
        self.metrics = metrics
        self.log: MonitorLog | None = None
        self.pairs: tuple[torch.Tensor, ...] = ()
        self.want_trust = False

    def start(self, run, state) -> None:
        c = run.config
        self.log = MonitorLog(c.out, resume_step=run.start if run.resume else -1)
        if run.fixed_views is not None:  # --full-batch: the step's own pairs, so X is the step's own
            pairs = run.fixed_views
        else:
            pairs = monitor_pairs(run.data.monitor_images.to(run.device), run.recipes, c.image_size,
                                  c.monitor_pairs)  # fmt: skip
        if c.channels_last:
            pairs = tuple(v.contiguous(memory_format=torch.channels_last) for v in pairs)
        self.pairs = pairs
        self.want_trust = c.optimizer == "lars" and c.precision != "fp16"  # fp16 grads are loss-scaled
        if run.start == 0:
            self.row(run, 0, None)

    def due(self, run, done: int) -> bool:
        return done % run.config.monitor_every == 0 or done == run.schedule.total

    def before_update(self, run, done: int):
        if not (self.want_trust and self.due(run, done)):
            return None
        c = run.config
        return lambda: lars_trust_ratios(run.model.projector_weights(), c.eta, c.weight_decay)

    def after_step(self, run, state) -> None:
        if self.due(run, state.done):
            self.row(run, state.done, state.out[4])

    def row(self, run, step: int, trust: torch.Tensor | None) -> None:
        """One monitor.jsonl row; a failure is reported and logged but never stops the training."""
        c = run.config
        try:
            r1, r2 = monitor_features(run.model, *self.pairs, c.batch_size, run.amp)
            weights = [w.detach() for w in run.model.projector_weights()]
            loss = LOSSES[c.loss]
            res = monitor(r1, r2, weights, loss=loss.x_form, temperature=c.temperature, batch_size=c.batch_size,
                          symmetric=loss.symmetric)  # fmt: skip
            extra = {} if trust is None else {"trust_ratio": trust.tolist()}
            self.log.write(step, res, lr=run.schedule.lr(step), **extra)
        except Exception as e:  # the monitor must not cost the run (any error: shapes, memory, linalg)
            msg = _warn("monitor", step, e)
            self.metrics.log({"step": step, "epoch": step / run.schedule.steps_per_epoch, "monitor_error": msg})
