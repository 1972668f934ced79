"""Small symmetric matrices to their spectra (Charton 2022, "What is my math transformer doing?"):
3x3 (or 4x4) symmetric matrices with the paper's eigenvalue distributions, encoded as upper-triangle
tokens, fitted by a small encoder to their sorted eigenvalues and sign-canonical eigenvectors.

The generators and encoding (`data`), the model built from `flowsim.nn` parts plus a feature
embedding (`model`), the paper's metrics (`metrics`: tolerance accuracy, eigenvalue, norm and
orthogonality errors, kappa(Q_hat), the eigengap, AUROC), the tracked quantities (`observables`),
Adam on fresh samples (`fresh`), the per-run verdicts (`verdicts`), figures (`figures`) and the
system class (`system`).
"""

from .config import DISTS as DISTS, TASKS as TASKS, SpectraConfig as SpectraConfig
from .data import (
    SpectraData as SpectraData,
    encode as encode,
    features as features,
    make_data as make_data,
    sample_matrices as sample_matrices,
    sigma as sigma,
    sign_canonical as sign_canonical,
    targets as targets,
)
from .fresh import evaluate_model as evaluate_model, fresh_adam as fresh_adam
from .metrics import (
    auroc as auroc,
    eig_err as eig_err,
    gap as gap,
    kappa as kappa,
    norm_err as norm_err,
    orth_err as orth_err,
    per_matrix as per_matrix,
    summary as summary,
    vec_err as vec_err,
)
from .model import FeatureEmbedding as FeatureEmbedding, SpectraModel as SpectraModel, init_model as init_model
from .observables import SpectraObserver as SpectraObserver
from .system import SYSTEM as SYSTEM, SpectraSystem as SpectraSystem
from .verdicts import (
    VERDICT_NEEDS as VERDICT_NEEDS,
    evaluate as evaluate,
    final_flow as final_flow,
    final_minibatch as final_minibatch,
    predictable as predictable,
    roughly_right as roughly_right,
)
