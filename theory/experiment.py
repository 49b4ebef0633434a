"""One toy experiment of the paper (Sec. 4-5, App. C): configure, integrate, analyse.

``run_experiment(SimConfig(...))`` trains a linear network under InfoNCE on the toy data and returns a
``ToyReport``, what was observed next to what the theory predicts, whose ``to_json()`` is the JSON report;
``python -m theory.simulate`` is its command line.

Collapse verdict (``theory.spectrum.collapse_counts``). A dimension is collapsed when its embedding variance
is at most ``COLLAPSE_RTOL`` times the largest variance of the same spectrum: at t = 0 of t = 0's, at the end of
the end's, so neither the init's scale nor a loss that shrinks the whole spectrum moves the count. When the
end's largest variance is itself at most ``COLLAPSE_RTOL`` times t = 0's, the collapse is total: every
dimension counts (``total_collapse``). ``collapsed_dims_initial`` is the t = 0 baseline;
``collapsed_by_training`` counts the dimensions collapsed at the end outside the subspace already collapsed at
t = 0.

Predictions. X is measured on ``X_BATCHES`` fresh batches of the run's data distribution at fixed weights
(W -> 0, the initial weights, the final weights), for gd and ode alike, and tested with the cross-fitted
``psd_check``. Its significantly negative directions are Theorem 1's collapse set. A run is ``unfinished``
when some of them have not collapsed yet; the time they need at the final X follows from the one-layer
solution (variance ~ exp(2 lambda t)) or, for L >= 2 balanced layers, from Theorem 3's sigma' = lambda
sigma^(2L-1): a lower bound, since X shrinks as the loss saturates and the rates keep falling. A late negative
direction counts only if it is self-consistent (``self_consistent``). Through a ReLU the last layer still
obeys -dL/dW_L = W_L X(h), X(h) the contrastive covariance of its input features h: Theorem 1 applied to W_L.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property

import numpy as np
from threadpoolctl import threadpool_limits

from dimcollapse.io import jsonable

from . import toy
from .covariance import PSD_ALPHA, PSDCheck, contrastive_covariance, holm, one_sided_t, x_verdict
from .dynamics import (
    ODE_METHODS,
    DivergenceError,
    EvaluationBudgetError,
    Trajectory,
    end_to_end,
    forward,
    orthogonal_init,
    paper_init,
    run_gd,
    run_ode,
    scaled_init,
)
from .losses import DEFAULT_TEMPERATURE, LOSSES, X_LOSSES
from .predict import adjacent_alignments, conserved_quantities, subspace_overlap
from .spectrum import COLLAPSE_RTOL, collapse_counts, collapsed_mask, singular_values

EVAL_SAMPLES = 4096
X_BATCHES = 64  # fresh batches per X measurement: i.i.d. samples for the cross-fitted psd_check
X_BUDGET = 512  # while the verdict is undetermined the batches double, up to this many
MAX_X_BUDGET = 65536
MAX_STRENGTH = 1e3
EXPLICIT_ODE_STEPS = 1e6  # an explicit ODE method needs about |lambda| t steps on a stiff X
DIAGNOSIS_EVALUATIONS = 20_000  # budget of the flow that tells a gd step-size instability from a blow-up


@dataclass
class SimConfig:
    augment_strength: float = 2.0
    augmented_dims: int = 8
    dim: int = 16
    layers: int = 1
    relu: bool = False
    samples: int = 128
    loss: str = "paper"
    temperature: float = DEFAULT_TEMPERATURE
    integrator: str = "gd"
    steps: int = 2000
    time: float | None = None
    lr: float = 0.02
    init: str = "orthogonal"
    noisy_views: int = 1
    ode_method: str = "RK45"
    seed: int = 0
    x_budget: int = X_BUDGET

    @property
    def total_time(self) -> float:
        return self.time if self.time is not None else self.steps * self.lr

    @property
    def gd_steps(self) -> int:
        """The gd steps actually taken: --steps, or --time / --lr when --time is given."""
        return self.steps if self.time is None else max(1, round(self.time / self.lr))

    def validate(self) -> None:
        """Raise ValueError with one line naming the bad value and what is allowed."""
        s = self.augment_strength
        if not (isinstance(s, int | float) and math.isfinite(s) and s >= 0):
            raise ValueError(f"--augment-strength must be a finite number >= 0, got {s}")
        if s > MAX_STRENGTH:
            raise ValueError(f"--augment-strength must be at most {MAX_STRENGTH:g} (a noise variance of 1e6 data "
                             f"variances; every augmented dim collapses from sqrt(2) on), got {s:g}")
        if self.dim < 1:
            raise ValueError(f"--dim must be >= 1, got {self.dim}")
        if not 0 <= self.augmented_dims <= self.dim:
            raise ValueError(f"--augmented-dims must be between 0 and --dim ({self.dim}), got {self.augmented_dims}")
        if self.layers < 1:
            raise ValueError(f"--layers must be >= 1, got {self.layers}")
        if self.samples < 2:
            raise ValueError(f"--samples must be >= 2 (a batch needs negatives), got {self.samples}")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"--temperature must be a finite number > 0, got {self.temperature}")
        if self.integrator not in ("gd", "ode"):
            raise ValueError(f"--integrator must be gd or ode, got {self.integrator!r}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        if self.time is not None and not (math.isfinite(self.time) and self.time > 0):
            raise ValueError(f"--time must be a finite number > 0, got {self.time}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0, got {self.lr}")
        from .dynamics import DIVERGENCE_NORM

        if parse_init(self.init)[1] > DIVERGENCE_NORM:  # such weights count as diverged before the first step
            raise ValueError(f"--init scale must be at most {DIVERGENCE_NORM:g} (weights past it count as diverged), "
                             f"got {self.init!r}")
        if self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed}")
        if self.noisy_views not in toy.NOISY_VIEWS:
            raise ValueError(f"--noisy-views must be 1 or 2, got {self.noisy_views}")
        if not X_BATCHES <= self.x_budget <= MAX_X_BUDGET:
            raise ValueError(f"--x-budget must be between {X_BATCHES} and {MAX_X_BUDGET} batches, got {self.x_budget}")
        if self.ode_method not in ODE_METHODS:
            raise ValueError(f"--ode-method must be one of {', '.join(ODE_METHODS)}, got {self.ode_method!r}")


INITS = ("orthogonal", "paper", "gaussian")
PAPER_DECAY = 0.35  # case_2.py: sigma_k = exp(-0.35 k) at width 16, a span of exp(-0.35 * 15)


def parse_init(spec: str) -> tuple[str, float]:
    """'orthogonal', 'paper' or 'gaussian', optionally ':scale'; a bare number s means 'orthogonal:s'."""
    kind, _, scale_text = str(spec).partition(":")
    try:
        if kind not in INITS:
            kind, scale_text = "orthogonal", kind if not scale_text else "bad"
        scale = float(scale_text) if scale_text else 1.0
    except ValueError:
        scale = float("nan")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"--init must be one of {', '.join(INITS)} (optionally ':scale') or a positive number, "
                         f"got {spec!r}")
    return kind, scale


def initial_weights(cfg: SimConfig, rng: np.random.Generator, batch_shape: tuple = ()) -> list[np.ndarray]:
    """The configured init (see ``--init``); the paper's decay is rescaled so its span is exp(-5.25) at every width."""
    kind, scale = parse_init(cfg.init)
    if kind == "orthogonal":
        return orthogonal_init(cfg.dim, cfg.layers, rng, batch_shape, scale)
    if kind == "gaussian":
        return scaled_init(cfg.dim, cfg.layers, scale, rng, batch_shape)
    decay = PAPER_DECAY * 15 / (cfg.dim - 1) if cfg.dim > 1 else 0.0
    return [scale * w for w in paper_init(cfg.dim, cfg.layers, rng, batch_shape, decay)]


def evaluation_inputs(seed: int, dim: int) -> np.ndarray:
    """The clean inputs every spectrum of a toy run is measured on: ``EVAL_SAMPLES`` x ``dim``, from a stream
    of their own (seed + 1,000,003) so that they never share draws with training."""
    return np.random.default_rng(seed + 1_000_003).standard_normal((EVAL_SAMPLES, dim))


def _views(cfg: SimConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return toy.toy_views(rng, cfg.samples, cfg.dim, cfg.augmented_dims, cfg.augment_strength, cfg.noisy_views)


def integrate(cfg: SimConfig, progress: bool = False) -> tuple[Trajectory, np.random.Generator, tuple | None]:
    """Run the configured integrator; returns the trajectory, the rng and the fixed sample (ode) if any."""
    rng = np.random.default_rng(cfg.seed)
    weights = initial_weights(cfg, rng)
    kwargs = dict(loss=cfg.loss, temperature=cfg.temperature, relu=cfg.relu)
    if cfg.integrator == "gd":
        steps = cfg.gd_steps
        traj = run_gd(weights, steps, cfg.lr, lambda r: _views(cfg, r), rng, max(1, steps // 200), progress,
                      track_conservation=cfg.layers >= 2 and not cfg.relu, **kwargs)
        return traj, rng, None
    fixed = _views(cfg, rng)
    return run_ode(weights, cfg.total_time, views=fixed, method=cfg.ode_method, **kwargs), rng, fixed


def has_covariance(cfg: SimConfig) -> bool:
    """X exists for the losses the registry gives an X form (paper, dot): of the end-to-end map (linear), of the
    last layer (ReLU)."""
    return cfg.loss in X_LOSSES


def _last_input(cfg: SimConfig, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """h, the input of the last linear map: x itself for a linear network (whose map is end-to-end)."""
    if cfg.relu and len(weights) > 1:
        return np.maximum(forward(weights[:-1], x, relu=True)[0], 0.0)
    return x


def _last_map(cfg: SimConfig, weights: list[np.ndarray]) -> np.ndarray:
    return weights[-1] if cfg.relu and len(weights) > 1 else end_to_end(weights)


def covariance_samples(
    cfg: SimConfig, weights: list[np.ndarray] | None, rng: np.random.Generator, batches: int = X_BATCHES
) -> np.ndarray:
    """X of ``batches`` fresh batches at fixed weights, (B, d, d): of the end-to-end map for a linear network,
    X(h) of the last layer for a ReLU one; ``weights=None`` is W -> 0 (all alpha = 1/N)."""
    out = []
    for _ in range(batches):
        x, x_aug = _views(cfg, rng)
        if weights is None:
            out.append(contrastive_covariance(x, x_aug, np.zeros((1, cfg.dim)), cfg.loss, cfg.temperature)[0])
            continue
        h, h_aug = _last_input(cfg, weights, x), _last_input(cfg, weights, x_aug)
        out.append(contrastive_covariance(h, h_aug, _last_map(cfg, weights), cfg.loss, cfg.temperature)[0])
    return np.stack(out)


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an absent threshold is null."""
    return value if math.isfinite(value) else None


def _smallest_directions(matrix: np.ndarray, count: int, side: str) -> np.ndarray:
    """The ``count`` directions a map shrinks most: right singular vectors (input side) of W, or
    eigenvectors of a covariance (side='cov'), as orthonormal columns."""
    if side == "cov":
        vectors = np.linalg.eigh(matrix)[1]
        return vectors[:, :count]
    vt = np.linalg.svd(matrix)[2]
    return vt[vt.shape[0] - count :].T if count > 0 else np.zeros((matrix.shape[1], 0))


@dataclass
class CollapseVerdict:
    """Collapsed embedding dimensions at t = 0 and at the end against one scale (module doc)."""

    reference: float  # the scale the end was judged against: its own largest variance, t = 0's if total
    initial: int  # collapsed at t = 0 (relative to the t = 0 largest variance)
    final: int  # collapsed at the end (relative to the end's largest; every dim for a total collapse)
    total: bool  # the end's largest variance is at most COLLAPSE_RTOL times t = 0's
    by_training: int  # collapsed at the end outside the subspace already collapsed at t = 0
    initial_ranks: list[int]  # 1-based ranks of the t = 0 spectrum that start collapsed
    initial_log10: list[float]  # their log10 variances at t = 0, relative to the largest


def collapse_verdict(cfg: SimConfig, w0: list[np.ndarray], w1: list[np.ndarray], x_eval: np.ndarray
                     ) -> tuple[CollapseVerdict, np.ndarray, np.ndarray, np.ndarray]:
    """The verdict, both spectra (descending) and the end-collapsed directions (input space for a linear
    network, embedding space for a ReLU one)."""
    z0, z1 = forward(w0, x_eval, cfg.relu)[0], forward(w1, x_eval, cfg.relu)[0]
    var0, var1 = singular_values(z0), singular_values(z1)
    counts = collapse_counts(var0, var1)
    reference = counts["reference"]
    mask0 = collapsed_mask(var0)
    mask1 = np.ones_like(mask0) if counts["total"] else collapsed_mask(var1)
    k0, k1 = int(mask0.sum()), int(mask1.sum())
    if cfg.relu:
        p0 = _smallest_directions(np.cov(z0.T, bias=True).reshape(cfg.dim, cfg.dim), k0, "cov")
        p1 = _smallest_directions(np.cov(z1.T, bias=True).reshape(cfg.dim, cfg.dim), k1, "cov")
    else:
        p0, p1 = _smallest_directions(end_to_end(w0), k0, "w"), _smallest_directions(end_to_end(w1), k1, "w")
    shared = float(np.sum((p0.T @ p1) ** 2)) if k0 and k1 else 0.0
    with np.errstate(divide="ignore"):
        rel0 = np.log10(var0 / var0.max()) if var0.max() > 0 else np.full_like(var0, -np.inf)
    verdict = CollapseVerdict(
        reference=reference, initial=k0, final=k1, total=counts["total"], by_training=max(0, k1 - round(shared)),
        initial_ranks=(np.flatnonzero(mask0) + 1).tolist(), initial_log10=rel0[mask0].tolist(),
    )
    return verdict, var0, var1, p1


class _JsonFields:
    """A frozen part of the report whose fields hold JSON values (numpy arrays and scalars become lists, ints and
    floats; inf and NaN None), so that it reads exactly as its JSON; ``to_json()`` lists the fields in order."""

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, jsonable(getattr(self, f.name)))

    def to_json(self) -> dict:
        return {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}


def _to_json(value):
    """A fresh JSON copy of a field: parts of the report by their ``to_json``."""
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    return value.to_json() if isinstance(value, _JsonFields) else jsonable(value)


@dataclass(frozen=True)
class Unfinished(_JsonFields):
    """X still predicts collapse along directions that have not collapsed (module doc)."""

    directions: int  # predicted directions outside the collapsed subspace
    decades_to_go: list[float]  # [min, max] of log10(variance / (1e-3 S)) over them
    x_eigenvalues: list[float]  # the end's X eigenvalues along the predicted directions
    more_time_needed: float  # at the slowest predicted rate, for the largest remaining variance
    suggested_time: float  # the run's time plus that, rounded up (a --time to rerun with)


# X is measured three times: at W -> 0 ("apriori"), at the initial weights ("initial") and at the end ("final");
# the per-measurement fields below are dicts with those keys.


@dataclass(frozen=True)
class PSDTest(_JsonFields):
    """How the three X verdicts were reached (``x_check``): the error level and the batches each used."""

    alpha: float
    batches: dict[str, int]
    first_batches: int
    budget: int
    batch_size: int
    detectable: dict[str, float | None]
    lower_bound: dict[str, float | None]
    delta: dict[str, float]


@dataclass(frozen=True)
class DirectionTable(_JsonFields):
    """The end X's eigen-directions v_k, ascending eigenvalue: what X says of each and what became of it."""

    x_eigenvalue_final: list[float]
    x_rayleigh_initial: list[float]  # v_k^T X v_k at t = 0
    embedding_variance: list[float]  # |W v_k|^2 at the end
    augmented_share: list[float]  # |v_k|^2 on the augmented coordinates
    predicted_collapsed: list[bool]  # significantly negative and self-consistent (Theorem 1)
    shrinks: list[bool]  # significantly negative but held at a finite equilibrium: not collapse
    observed_collapsed: list[bool]  # v_k lies in the collapsed subspace


@dataclass(frozen=True)
class XPredictions(_JsonFields):
    """Theorem 1 for a linear network: X's significantly negative directions and how they met what collapsed."""

    predicted_collapsed_dims: int  # the end's self-consistent negative directions
    x_negative_dims_final: int
    predicted_collapsed_dims_initial: int
    predicted_collapsed_dims_apriori: int
    collapsed_subspace_overlap: float | None  # overlaps["final"]
    overlaps: dict[str, float | None]  # with the collapsed subspace; None: nothing predicted, nothing collapsed
    not_theorem1: bool  # something collapsed although every X was shown PSD
    contrastive_covariance_eigenvalues: dict[str, list[float]]
    is_psd: dict[str, bool]
    x_verdict: dict[str, str]  # "psd", "not psd" or "undetermined"
    x_verdict_text: dict[str, str]
    psd_test: PSDTest
    directions: DirectionTable
    unfinished: Unfinished | None


@dataclass(frozen=True)
class ReluLastLayer(_JsonFields):
    """Theorem 1 applied to W_L of a ReLU network, with X(h) of its input features h: at t = 0 and at the end."""

    predicted_collapsed_dims: int
    x_negative_dims_final: int
    predicted_collapsed_dims_initial: int
    x_verdict: dict[str, str]
    x_eigenvalues: dict[str, list[float]]
    most_negative_eigenvalue: dict[str, float]
    cosine_most_negative_with_mean_h: dict[str, float | None]
    observed_collapsed_dims: int  # W_L's sigma^2 <= COLLAPSE_RTOL x the largest at t = 0 or at the end
    observed_collapsed_dims_initial: int
    predicted_inside_observed: float | None  # share of X(h)'s predicted directions among W_L's collapsed ones
    observed_log10_singular_values: list[float]
    overlap: float | None


@dataclass(frozen=True)
class AlignmentPair(_JsonFields):
    """Theorem 2 for adjacent layers W_l, W_l+1 (``theory.predict.Alignment``)."""

    pair: list[int]  # [l, l + 1], 1-based
    score: float
    chance: float
    chance_sd: float
    shared_basis: float
    grouped_score: float
    grouped_chance: float
    groups: list[list[int]]
    group_scores: list[float]
    diagonal_score: float
    surviving: int
    matrix: list[list[float]]  # |V_l+1^T U_l|


@dataclass(frozen=True)
class ConservationPair(_JsonFields):
    """Drift of C_l = W_l W_l^T - W_l+1^T W_l+1 relative to ||W_l W_l^T||_F; for gd also the part its exact
    second-order step term accounts for (the flow conserves C_l)."""

    pair: list[int]
    drift: float
    gd_second_order: float | None = None
    unexplained: float | None = None

    def to_json(self) -> dict:
        out = super().to_json()
        if self.gd_second_order is None:  # the flow: nothing to account for
            del out["gd_second_order"], out["unexplained"]
        return out


@dataclass(frozen=True)
class History(_JsonFields):
    """Singular values over the run, one row per record: of every layer and, for a linear network on isotropic
    data, of the embedding covariance W W^T."""

    times: list[float]
    weight_singular_values: list[list[list[float]]]
    loss: list[float]
    embedding_singular_values: list[list[float]] | None = None

    def to_json(self) -> dict:
        out = super().to_json()
        if self.embedding_singular_values is None:
            del out["embedding_singular_values"]
        return out


@dataclass(frozen=True, eq=False)
class ToyReport(_JsonFields, Mapping):
    """One toy run: what was observed beside what the theory predicts (module doc).

    The parts a run may lack are None: ``x_predictions`` (linear networks with an X loss),
    ``relu_last_layer`` (ReLU networks of two or more layers with an X loss), ``alignment`` (two or more
    layers) and ``conservation`` (two or more linear layers). ``to_json()`` is the JSON report, flat; the
    report also reads as that dict (``report["collapsed_dims"]``).
    """

    config: dict
    time: float
    gradient_evaluations: int
    final_loss: float | None
    weight_singular_values: list[list[float]]
    weight_singular_values_initial: list[list[float]]
    embedding_singular_values: list[float]  # descending, on the clean evaluation inputs
    embedding_singular_values_initial: list[float]
    embedding_log10_spectrum: list[float | None]  # None: a variance of exactly 0
    embedding_log10_spectrum_initial: list[float | None]
    collapse_reference: float
    collapsed_dims: int
    collapsed_dims_initial: int
    total_collapse: bool
    collapsed_by_training: int
    collapsed_initial_ranks: list[int]
    collapsed_initial_log10: list[float]
    apriori_threshold: float | None  # the strength above which X at W -> 0 is not PSD; None: never
    trajectory: History
    x_predictions: XPredictions | None = None
    relu_last_layer: ReluLastLayer | None = None
    alignment: list[AlignmentPair] | None = None
    conservation: list[ConservationPair] | None = None

    @property
    def alignment_matrix(self) -> list[list[float]] | None:
        return None if self.alignment is None else self.alignment[0].matrix

    @property
    def conservation_drift(self) -> float | None:
        return None if self.conservation is None else max(row.drift for row in self.conservation)

    def to_json(self) -> dict:
        parts = ("x_predictions", "relu_last_layer", "alignment", "conservation")
        out = {f.name: _to_json(getattr(self, f.name)) for f in fields(self) if f.name not in parts}
        if self.x_predictions is not None:
            out.update(self.x_predictions.to_json())
        if self.relu_last_layer is not None:
            out["relu_last_layer"] = self.relu_last_layer.to_json()
        if self.alignment is not None:
            out["alignment"] = _to_json(self.alignment)
            out["alignment_matrix"] = _to_json(self.alignment_matrix)
        if self.conservation is not None:
            out["conservation"] = _to_json(self.conservation)
            out["conservation_drift"] = self.conservation_drift
        return out

    @cached_property
    def _json(self) -> dict:
        return self.to_json()

    def __getitem__(self, key: str):
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


def time_to_collapse(variance: np.ndarray, target: float, lam: np.ndarray, layers: int) -> np.ndarray:
    """Time for an embedding variance to fall to ``target`` under fixed X with v^T X v = lam < 0.

    One layer: W v' = lam W v, variance ~ exp(2 lam t). L >= 2 aligned balanced layers (Theorem 3):
    sigma' = lam sigma^(2L-1), variance sigma^(2L), so sigma^-(2L-2) grows by (2L-2)|lam| per unit time.
    """
    variance, lam = np.asarray(variance, float), np.abs(np.asarray(lam, float))
    if layers == 1:
        return np.log(variance / target) / (2 * lam)
    p = 2 * layers - 2
    return ((target ** (-p / (2 * layers))) - variance ** (-p / (2 * layers))) / (p * lam)


def x_check(cfg: SimConfig, weights: list[np.ndarray] | None, rng: np.random.Generator,
            budget: int = X_BUDGET) -> PSDCheck:
    """The PSD verdict on X at fixed weights (``weights=None``: W -> 0) from fresh batches of the run's data:
    ``X_BATCHES`` first, doubled while undetermined up to ``budget`` (``theory.covariance.x_verdict``)."""
    if weights is None:
        return x_verdict(lambda r: _views(cfg, r), None, cfg.loss, cfg.temperature, batches=X_BATCHES,
                         budget=budget, rng=rng)[0]

    def last_inputs(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, x_aug = _views(cfg, r)
        return _last_input(cfg, weights, x), _last_input(cfg, weights, x_aug)

    return x_verdict(last_inputs, _last_map(cfg, weights), cfg.loss, cfg.temperature, batches=X_BATCHES,
                     budget=budget, rng=rng)[0]


def self_consistent(cfg: SimConfig, weights: list[np.ndarray], candidates: np.ndarray, rng: np.random.Generator,
                    alpha: float) -> np.ndarray:
    """Which candidate directions v (columns) stay significantly negative in X once W no longer carries them.

    Theorem 1 holds X fixed. Late in training X moves with W, and around a finite equilibrium it is negative
    along a direction W carries a little too much of (a restoring force), positive along one it carries too
    little of: that is not collapse. Collapse along v is self-consistent when X is still negative along v at
    W (I - P), P the projector on the candidates. Tested on fresh batches (independent of the ones that chose
    the candidates): one-sided t test of v^T X_b v < 0 per direction, Holm-corrected at ``alpha``.
    """
    k = candidates.shape[1]
    if k == 0:
        return np.zeros(0, dtype=bool)
    drop = np.eye(cfg.dim) - candidates @ candidates.T
    if cfg.relu and len(weights) > 1:  # candidates live in the last layer's input space
        samples = covariance_samples(cfg, [*weights[:-1], weights[-1] @ drop], rng)
    else:
        samples = covariance_samples(cfg, [end_to_end(weights) @ drop], rng)
    rayleigh = np.einsum("ik,bij,jk->bk", candidates, samples, candidates)
    return holm(one_sided_t(rayleigh)[2], alpha)


def _overlaps(checks: dict[str, PSDCheck], observed: np.ndarray, end_basis: np.ndarray) -> dict:
    """Overlap of the observed collapsed subspace with each prediction (W -> 0, t = 0, the end's
    self-consistent directions); None where nothing was predicted and nothing collapsed."""
    bases = {"apriori": checks["apriori"].basis, "initial": checks["initial"].basis, "final": end_basis}
    return {k: None if b.shape[1] == 0 and observed.shape[1] == 0 else subspace_overlap(b, observed)
            for k, b in bases.items()}


def _x_predictions(cfg: SimConfig, traj: Trajectory, rng: np.random.Generator, verdict: CollapseVerdict,
                   observed: np.ndarray, var1: np.ndarray, budget: int) -> XPredictions:
    """Theorem 1 for a linear network: X at W -> 0, t = 0 and the end; overlaps; the direction table;
    whether the run has finished."""
    initial, final = [w[0] for w in traj.weights], traj.final
    checks = {"apriori": x_check(cfg, None, rng, budget), "initial": x_check(cfg, initial, rng, budget),
              "final": x_check(cfg, final, rng, budget)}
    check1 = checks["final"]
    predicted = check1.negative.copy()
    predicted[predicted] = self_consistent(cfg, final, check1.basis, rng, PSD_ALPHA)
    basis = check1.eigenvectors[:, predicted]
    overlaps = _overlaps(checks, observed, basis)
    x_initial = covariance_samples(cfg, initial, rng, X_BATCHES).mean(0)
    return XPredictions(
        predicted_collapsed_dims=int(predicted.sum()),
        x_negative_dims_final=check1.n_negative,
        predicted_collapsed_dims_initial=checks["initial"].n_negative,
        predicted_collapsed_dims_apriori=checks["apriori"].n_negative,
        collapsed_subspace_overlap=overlaps["final"],
        overlaps=overlaps,
        # Theorem 1 is ruled out only where every prediction was shown PSD, not where it was undecided
        not_theorem1=verdict.final > 0 and all(c.verdict == "psd" for c in checks.values()),
        contrastive_covariance_eigenvalues={k: c.eigenvalues for k, c in checks.items()},
        is_psd={k: c.is_psd for k, c in checks.items()},
        x_verdict={k: c.verdict for k, c in checks.items()},
        x_verdict_text={k: c.describe() for k, c in checks.items()},
        psd_test=PSDTest(
            alpha=check1.alpha, batches={k: c.samples for k, c in checks.items()}, first_batches=X_BATCHES,
            budget=budget, batch_size=cfg.samples, detectable={k: c.detectable for k, c in checks.items()},
            lower_bound={k: c.lower_bound for k, c in checks.items()}, delta={k: c.delta for k, c in checks.items()},
        ),
        directions=_direction_table(cfg, check1, predicted, observed, x_initial, end_to_end(final)),
        unfinished=_unfinished(cfg, traj, verdict, observed, basis, check1.eigenvalues[predicted], var1),
    )


def _direction_table(cfg: SimConfig, check: PSDCheck, predicted: np.ndarray, observed: np.ndarray,
                     x_initial: np.ndarray, w_end: np.ndarray) -> DirectionTable:
    """The end X's eigen-directions, ascending eigenvalue (its eigenvalues descend, hence the reversals)."""
    vectors = check.eigenvectors
    gain = np.linalg.norm(w_end @ vectors, axis=0) ** 2  # embedding variance along each direction
    # a direction is observed collapsed when it lies in the collapsed subspace; its own variance |W v|^2 is not
    # a reliable test, as X's sampled eigenvectors tilt by ~1e-2 and pick up the large variances next to them
    collapsed = np.sum((observed.T @ vectors) ** 2, axis=0) > 0.5
    shrinks = check.negative & ~predicted  # negative in X, but held at a finite equilibrium
    mask = toy.augmentation_mask(cfg.dim, cfg.augmented_dims)
    return DirectionTable(
        x_eigenvalue_final=check.eigenvalues[::-1],
        x_rayleigh_initial=np.einsum("ik,ij,jk->k", vectors, x_initial, vectors)[::-1],
        embedding_variance=gain[::-1],
        augmented_share=((vectors**2).T @ mask)[::-1],
        predicted_collapsed=predicted[::-1],
        shrinks=shrinks[::-1],
        observed_collapsed=collapsed[::-1],
    )


def _unfinished(cfg: SimConfig, traj: Trajectory, verdict: CollapseVerdict, observed: np.ndarray,
                basis: np.ndarray, rates: np.ndarray, var1: np.ndarray) -> Unfinished | None:
    """Predicted directions outside the collapsed subspace, and a --time that reaches them.

    Their variances are the smallest not-yet-collapsed values of the end spectrum. The time comes from the
    slower of two rates: the end X's slowest predicted eigenvalue (Theorem 1 / Theorem 3 at fixed X) and the
    decay those spectrum ranks showed over the last quarter of the run, since X keeps shrinking as the loss
    saturates and a rate read at the end alone undershoots.
    """
    n_predicted = basis.shape[1]
    inside = float(np.sum((observed.T @ basis) ** 2)) if verdict.final and n_predicted else 0.0
    pending = n_predicted - round(inside)
    threshold = COLLAPSE_RTOL * verdict.reference
    if pending <= 0 or verdict.total:
        return None
    order = np.argsort(np.asarray(var1))
    ranks = order[verdict.final : verdict.final + pending]
    variances = np.asarray(var1)[ranks]
    keep = variances > threshold
    if not keep.any():
        return None
    variances, ranks = variances[keep], ranks[keep]
    more = float(time_to_collapse(variances.max(), threshold, rates.max(), cfg.layers))
    observed_rate = _recent_decay(traj, ranks)
    if observed_rate is not None and cfg.layers == 1:
        more = max(more, float(np.log(variances.max() / threshold) / observed_rate))
    decades = np.log10(variances / threshold)
    return Unfinished(
        directions=int(keep.sum()), decades_to_go=[float(decades.min()), float(decades.max())],
        x_eigenvalues=rates.tolist(), more_time_needed=more,
        suggested_time=float(_round_up(traj.times[-1] + more)),
    )


def _recent_decay(traj: Trajectory, ranks_desc: np.ndarray) -> float | None:
    """The slowest decay rate -d log(variance)/dt over the last quarter of the run among the given ranks of the
    descending embedding spectrum (None when it is not decaying there or the trajectory is too short)."""
    times = np.asarray(traj.times)
    if len(times) < 8:
        return None
    values = np.linalg.svd(end_to_end(traj.weights), compute_uv=False) ** 2  # (records, d) descending
    start = int(0.75 * (len(times) - 1))
    span = times[-1] - times[start]
    with np.errstate(divide="ignore"):
        drop = np.log(values[start, ranks_desc]) - np.log(values[-1, ranks_desc])
    rate = float(np.min(drop)) / span if span > 0 else 0.0
    return rate if np.isfinite(rate) and rate > 0 else None


def _round_up(value: float) -> float:
    """Round up to two significant digits (a --time to suggest)."""
    if value <= 0 or not math.isfinite(value):
        return value
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return math.ceil(value / scale) * scale


def _relu_last_layer(cfg: SimConfig, traj: Trajectory, rng: np.random.Generator, x_eval: np.ndarray
                     ) -> ReluLastLayer:
    """Theorem 1 applied to W_L of a ReLU network: -dL/dW_L = W_L X(h), h >= 0 the last layer's input."""
    initial, final = [w[0] for w in traj.weights], traj.final
    check0 = x_check(cfg, initial, rng, cfg.x_budget)
    check1 = x_check(cfg, final, rng, cfg.x_budget)
    sv0 = np.linalg.svd(initial[-1], compute_uv=False)
    _, sv1, vt1 = np.linalg.svd(final[-1])
    reference = max(sv0.max(), sv1.max()) ** 2
    dead = sv1**2 <= COLLAPSE_RTOL * reference
    observed = vt1[dead].T
    mean_h = _last_input(cfg, final, x_eval).mean(axis=0)
    mean_h0 = _last_input(cfg, initial, x_eval).mean(axis=0)

    def cosine(v: np.ndarray, m: np.ndarray) -> float | None:
        norm = np.linalg.norm(m)
        return float(abs(v @ m) / norm) if norm > 0 else None

    keep = self_consistent(cfg, final, check1.basis, rng, PSD_ALPHA)
    basis = check1.basis[:, keep]
    k = basis.shape[1]
    nothing = k == 0 and observed.shape[1] == 0
    inside = float(np.sum((observed.T @ basis) ** 2) / k) if k else None
    return ReluLastLayer(
        predicted_collapsed_dims=k,
        x_negative_dims_final=check1.n_negative,
        predicted_collapsed_dims_initial=check0.n_negative,
        x_verdict={"initial": check0.verdict, "final": check1.verdict},
        x_eigenvalues={"initial": check0.eigenvalues, "final": check1.eigenvalues},
        most_negative_eigenvalue={"initial": float(check0.eigenvalues[-1]), "final": float(check1.eigenvalues[-1])},
        cosine_most_negative_with_mean_h={"initial": cosine(check0.eigenvectors[:, -1], mean_h0),
                                          "final": cosine(check1.eigenvectors[:, -1], mean_h)},
        observed_collapsed_dims=int(dead.sum()),
        observed_collapsed_dims_initial=int(np.sum(sv0**2 <= COLLAPSE_RTOL * sv0.max() ** 2)),
        predicted_inside_observed=inside,
        observed_log10_singular_values=np.log10(np.maximum(sv1, 1e-320)),
        overlap=None if nothing else subspace_overlap(basis, observed),
    )


def _alignment(weights: list[np.ndarray], survivors: int) -> list[AlignmentPair]:
    """Every adjacent pair (W_l, W_l+1), Theorem 2: the chance-corrected score over the surviving modes with its
    spread at chance, the shared-basis score, the gap-grouped score and the rank-order mean |A_kk| beside it,
    and the raw |V_l+1^T U_l| (``theory.predict.Alignment``)."""
    return [AlignmentPair(pair=[layer + 1, layer + 2], score=a.score, chance=a.chance, chance_sd=a.chance_sd,
                          shared_basis=a.shared_basis, grouped_score=a.grouped_score, grouped_chance=a.grouped_chance,
                          groups=[list(g) for g in a.groups], group_scores=a.group_scores,
                          diagonal_score=a.diagonal_score, surviving=a.surviving, matrix=a.matrix)
            for layer, a in enumerate(adjacent_alignments(weights, survivors))]


def _conservation(cfg: SimConfig, traj: Trajectory) -> list[ConservationPair]:
    """Per adjacent pair: drift of C_l = W_l W_l^T - W_l+1^T W_l+1, relative to ||W_l W_l^T||_F at the end,
    and for gd the part the exact second-order step term accounts for."""
    initial, final = [w[0] for w in traj.weights], traj.final
    out = []
    increments = traj.info.get("conservation_increment")
    for layer, (c0, c1) in enumerate(zip(conserved_quantities(initial), conserved_quantities(final),
                                          strict=True)):
        scale = max(float(np.linalg.norm(final[layer] @ final[layer].T)), 1e-300)
        change = c1 - c0
        inc = None if increments is None else increments[layer]
        out.append(ConservationPair(
            pair=[layer + 1, layer + 2], drift=float(np.linalg.norm(change)) / scale,
            gd_second_order=None if inc is None else float(np.linalg.norm(inc)) / scale,
            unexplained=None if inc is None else float(np.linalg.norm(change - inc)) / scale,
        ))
    return out


def analyse(cfg: SimConfig, traj: Trajectory, rng: np.random.Generator, fixed: tuple | None = None) -> ToyReport:
    """Observed outcome and the theory's predictions (module doc); ``to_json()`` gives the JSON report."""
    initial, final = [w[0] for w in traj.weights], traj.final
    x_eval = evaluation_inputs(cfg.seed, cfg.dim)
    verdict, var0, var1, observed = collapse_verdict(cfg, initial, final, x_eval)
    with np.errstate(divide="ignore"):
        log0, log1 = np.log10(var0), np.log10(var1)
    config = asdict(cfg)
    if cfg.integrator == "gd":
        config["steps"] = cfg.gd_steps
    deep_relu = cfg.relu and cfg.layers > 1
    return ToyReport(
        config=config,
        time=float(traj.times[-1]),
        gradient_evaluations=traj.gradient_evaluations,
        final_loss=float(traj.losses[-1]) if len(traj.losses) else None,
        weight_singular_values=[np.linalg.svd(w, compute_uv=False) for w in final],
        weight_singular_values_initial=[np.linalg.svd(w, compute_uv=False) for w in initial],
        embedding_singular_values=var1,
        embedding_singular_values_initial=var0,
        embedding_log10_spectrum=log1,
        embedding_log10_spectrum_initial=log0,
        collapse_reference=verdict.reference,
        collapsed_dims=verdict.final,
        collapsed_dims_initial=verdict.initial,
        total_collapse=verdict.total,
        collapsed_by_training=verdict.by_training,
        collapsed_initial_ranks=verdict.initial_ranks,
        collapsed_initial_log10=verdict.initial_log10,
        apriori_threshold=_finite_or_none(toy.apriori_threshold(cfg.noisy_views, loss=cfg.loss)),
        trajectory=_history(cfg, traj),
        x_predictions=_x_predictions(cfg, traj, rng, verdict, observed, var1, cfg.x_budget)
        if has_covariance(cfg) and not deep_relu else None,
        relu_last_layer=_relu_last_layer(cfg, traj, rng, x_eval) if has_covariance(cfg) and deep_relu else None,
        alignment=_alignment(final, cfg.dim - verdict.final) if cfg.layers >= 2 else None,
        conservation=_conservation(cfg, traj) if cfg.layers >= 2 and not cfg.relu else None,
    )


def _history(cfg: SimConfig, traj: Trajectory) -> History:
    # for isotropic data the embedding covariance is W W^T: its singular values over time
    embedding = None if cfg.relu else np.linalg.svd(end_to_end(traj.weights), compute_uv=False) ** 2
    return History(
        times=traj.times,
        weight_singular_values=[np.linalg.svd(w, compute_uv=False) for w in traj.weights],
        loss=[float(v) for v in traj.losses],
        embedding_singular_values=embedding,
    )


def _layer_gain(weights: list[np.ndarray], k: int) -> float:
    """||W_L..W_k+1||_2^2 ||W_k-1..W_1||_2^2 (an empty product is the identity)."""
    above = np.linalg.norm(end_to_end(weights[k + 1 :]), 2) ** 2 if k + 1 < len(weights) else 1.0
    below = np.linalg.norm(end_to_end(weights[:k]), 2) ** 2 if k > 0 else 1.0
    return float(above * below)


def _precheck(cfg: SimConfig) -> None:
    """Refuse, with one line, runs whose integrator cannot follow X at t = 0 (linear networks).

    gd is Euler's method on W' = W X: along an eigenvalue lambda < 0 each step multiplies by 1 + lr lambda,
    which overshoots and grows when lr |lambda| > 2. An explicit ODE method needs about |lambda| t steps.
    """
    if not has_covariance(cfg) or cfg.relu:
        return
    rng = np.random.default_rng(cfg.seed)
    weights = initial_weights(cfg, rng)
    lowest = float(np.linalg.eigvalsh(covariance_samples(cfg, weights, rng, batches=4).mean(axis=0))[0])
    if lowest >= 0:
        return
    # the flow's rate along X's lowest direction, through layer l: at most |lambda| ||W_>l||^2 ||W_<l||^2
    gain = max(_layer_gain(weights, k) for k in range(cfg.layers))
    lowest *= gain
    if cfg.integrator == "gd" and cfg.layers == 1 and cfg.lr * -lowest > 2:
        raise ValueError(
            f"--lr {cfg.lr:g} is unstable for --augment-strength {cfg.augment_strength:g}: gd overshoots from "
            f"the first step (lr x |lowest eigenvalue of X at t=0| = {cfg.lr * -lowest:.3g} > 2); use --lr "
            f"below {2 / -lowest:.2g} or --integrator ode")
    if cfg.integrator == "ode" and cfg.ode_method in ("RK45", "RK23", "DOP853") and \
            -lowest * cfg.total_time > EXPLICIT_ODE_STEPS:
        raise ValueError(
            f"--ode-method {cfg.ode_method} is explicit and would need ~{-lowest * cfg.total_time:.1g} steps "
            f"(the flow's rate along X's lowest direction at t=0 is up to {lowest:.3g}); use --ode-method Radau "
            "or BDF, or a smaller --time")


def _diagnose(cfg: SimConfig, error: DivergenceError) -> str:
    """Name the cause of a divergence: a gd step-size instability, or a blow-up of the flow itself."""
    t_hit = getattr(error, "time", float("nan"))
    growth = ("a finite-time blow-up of the gradient flow of an unnormalized deep linear network (Theorem 3)"
              if cfg.layers >= 2 else "unbounded growth of the flow W' = W X along X's positive directions")
    if cfg.integrator == "ode":
        return f"the weights diverged at t = {t_hit:.3g} (|W| > 1e8): {growth}; shorten --time or lower --init"
    rng = np.random.default_rng(cfg.seed)
    weights = initial_weights(cfg, rng)
    horizon = min(cfg.total_time, 4 * t_hit + 1.0) if math.isfinite(t_hit) else cfg.total_time
    try:
        run_ode(weights, horizon, views=_views(cfg, rng), records=2, max_evaluations=DIAGNOSIS_EVALUATIONS,
                loss=cfg.loss, temperature=cfg.temperature, relu=cfg.relu)
    except EvaluationBudgetError:
        return (f"gd diverged at t = {t_hit:.3g} (step {round(t_hit / cfg.lr)}): the gradient flow from the same "
                f"init is stiff (an adaptive ODE needs more than {DIAGNOSIS_EVALUATIONS} steps to follow it), so "
                f"steps of lr {cfg.lr:g} overshoot: a step-size instability; use a much smaller --lr or "
                "--integrator ode --ode-method BDF")
    except DivergenceError as flow:
        return (f"the weights diverged at t = {t_hit:.3g}, and the gradient flow from the same init diverges too "
                f"(t = {getattr(flow, 'time', float('nan')):.3g}, adaptive ODE on one batch): {growth}; "
                "shorten --time/--steps or lower --init")
    return (f"gd diverged at t = {t_hit:.3g} (step {round(t_hit / cfg.lr)}) from a step-size instability: the "
            f"gradient flow from the same init stays bounded to t = {horizon:.3g} (adaptive ODE on one batch); "
            f"use a smaller --lr (e.g. {cfg.lr / 10:g}) or --integrator ode")


def run_experiment(cfg: SimConfig, progress: bool = False) -> ToyReport:
    """Validate, integrate, analyse. Raises ValueError (bad config) or DivergenceError (named cause)."""
    cfg.validate()
    if cfg.integrator == "gd":
        cfg = replace(cfg, steps=cfg.gd_steps)
    with threadpool_limits(limits=1, user_api="blas"):  # tiny matrices: extra threads only synchronise
        _precheck(cfg)
        try:
            traj, rng, fixed = integrate(cfg, progress)
        except DivergenceError as err:
            raise DivergenceError(_diagnose(cfg, err)) from None
        return analyse(cfg, traj, rng, fixed)
