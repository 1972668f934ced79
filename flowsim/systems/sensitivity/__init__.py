"""Sensitivity and the loss landscape (Hahn & Rofin, ACL 2024): Boolean functions of n bits (PARITY,
MAJORITY, FIRST, MEAN, random tables) fitted by a post-LayerNorm transformer with MSE.

The task (`data`), the model built from `flowsim.nn` (`model`), the paper's metrics (`metrics`:
exact average sensitivity by Walsh-Hadamard transform, perturbation sharpness, LayerNorm blow-up,
||theta||^2), the tracked quantities (`observables`), the per-run verdicts (`verdicts`), figures
(`figures`) and the system class (`system`).
"""

from .config import TARGETS as TARGETS, SensitivityConfig as SensitivityConfig
from .data import (
    SensitivityData as SensitivityData,
    bit_table as bit_table,
    make_data as make_data,
    target_table as target_table,
)
from .metrics import (
    average_sensitivity as average_sensitivity,
    completion_sensitivity as completion_sensitivity,
    fourier_weights as fourier_weights,
    ln_blowup as ln_blowup,
    masked_sq_norm as masked_sq_norm,
    perturbation_draws as perturbation_draws,
    perturbation_sharpness as perturbation_sharpness,
    real_sensitivity as real_sensitivity,
    walsh_hadamard as walsh_hadamard,
)
from .model import (
    SensitivityTransformer as SensitivityTransformer,
    init_model as init_model,
    mse_loss as mse_loss,
    positional_mask as positional_mask,
)
from .observables import SensitivityObserver as SensitivityObserver
from .system import SYSTEM as SYSTEM, SensitivitySystem as SensitivitySystem, loss_events as loss_events
from .verdicts import (
    VERDICT_NEEDS as VERDICT_NEEDS,
    evaluate as evaluate,
    final_flow as final_flow,
    final_seeds as final_seeds,
    fitted_mask as fitted_mask,
    flow_fit_time as flow_fit_time,
    is_fitted as is_fitted,
    seed_fit_steps as seed_fit_steps,
)
