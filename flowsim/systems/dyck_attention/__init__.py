"""Many attention solutions on bounded Dyck languages (Wen, Li, Liu, Risteski, NeurIPS 2023).

Dyck-(k, D) next-token prediction (strings from the engine's shared sampler `flowsim._dyck`) by the
paper's 1-layer model with the depth-given one-hot embedding, or a 2-layer residual model (`model`);
its metrics (`metrics`: closing-bracket accuracy, attention total variation on the probe,
stack-likeness, the released code's balance violation), tracked quantities (`observables`), per-run
verdicts (`verdicts`), figures (`figures`) and the system class (`system`).
"""

from .config import ARCHS as ARCHS, DyckAttentionConfig as DyckAttentionConfig
from .data import DyckData as DyckData, Rows as Rows, make_data as make_data, probe_tokens as probe_tokens
from .metrics import (
    attention_tv as attention_tv,
    balance_violation as balance_violation,
    closing_accuracy as closing_accuracy,
    probe_patterns as probe_patterns,
    stack_likeness as stack_likeness,
)
from .model import DyckModel as DyckModel, init_model as init_model, lm_loss as lm_loss, pair_depth as pair_depth
from .observables import DyckObserver as DyckObserver, rows_accuracy as rows_accuracy
from .system import SYSTEM as SYSTEM, DyckAttentionSystem as DyckAttentionSystem
from .verdicts import (
    VERDICT_NEEDS as VERDICT_NEEDS,
    evaluate as evaluate,
    final_flow as final_flow,
    final_seeds as final_seeds,
    tv as tv,
)
