"""Theory of dimensional collapse in contrastive learning (Jing, Vincent, LeCun, Tian; ICLR 2022).

numpy/scipy/sympy only: this package never imports torch.
"""

from .batched import sweep, train_batched
from .covariance import PSDCheck, apriori_covariance, contrastive_covariance, psd_check
from .dynamics import (
    DivergenceError,
    Trajectory,
    end_to_end,
    expm_solution,
    fixed_covariance_gradients,
    forward,
    loss_and_gradients,
    orthogonal_init,
    paper_init,
    run_gd,
    run_ode,
    scaled_init,
)
from .experiment import SimConfig, ToyReport, analyse, integrate, run_experiment
from .losses import LOSSES, contrastive_loss, dot_loss, ntxent_loss, paper_loss, paper_weights
from .predict import (
    Alignment,
    adjacent_alignments,
    alignment_matrix,
    alignment_score,
    blowup_time,
    collapsed_input_subspace,
    conservation_drift,
    conserved_quantities,
    layer_alignment,
    negative_subspace,
    predicted_collapsed_modes,
    sigma_trajectory,
    subspace_overlap,
    theorem3_check,
)
from .spectrum import (
    COLLAPSE_RTOL,
    Spectrum,
    collapsed_mask,
    effective_rank,
    embedding_spectrum,
    n_collapsed,
    rankme,
    singular_values,
)
from .toy import apriori_threshold, toy_views

__all__ = [
    "COLLAPSE_RTOL", "LOSSES", "DivergenceError", "PSDCheck", "SimConfig", "Spectrum", "ToyReport", "Trajectory",
    "alignment_matrix", "alignment_score", "apriori_covariance", "apriori_threshold", "blowup_time",
    "collapsed_input_subspace", "collapsed_mask", "conservation_drift", "conserved_quantities",
    "contrastive_covariance", "contrastive_loss", "dot_loss", "effective_rank", "embedding_spectrum",
    "end_to_end", "expm_solution", "fixed_covariance_gradients", "forward", "loss_and_gradients",
    "n_collapsed", "negative_subspace", "ntxent_loss", "paper_init", "paper_loss", "paper_weights",
    "predicted_collapsed_modes", "psd_check", "rankme", "run_gd", "run_ode", "scaled_init",
    "orthogonal_init", "run_experiment", "sigma_trajectory", "singular_values", "subspace_overlap", "sweep",
    "toy_views", "Alignment", "adjacent_alignments", "layer_alignment",
    "analyse", "integrate", "train_batched", "theorem3_check",
]
