"""Reduced systems of the co-occurrence transformer's gradient flow (see `theory/` for derivations)."""

from .attention import (
    attention_displacement_vs_L as attention_displacement_vs_L,
    score_change_projections as score_change_projections,
    theory_C_scale as theory_C_scale,
)
from .gram import (
    GramModel as GramModel,
    GramObserver as GramObserver,
    ReducedGramFlow as ReducedGramFlow,
    gram_of as gram_of,
    gram_problem as gram_problem,
    loss_from_SG as loss_from_SG,
    reduce_problem as reduce_problem,
    wishart_gram as wishart_gram,
)
from .phase2 import (
    Phase2Model as Phase2Model,
    Phase2System as Phase2System,
    balancing_summary as balancing_summary,
    compare_phase2 as compare_phase2,
    loss_law_fit as loss_law_fit,
    phase2_observer as phase2_observer,
    phase2_problem as phase2_problem,
)
from .phase2_scan import (
    PHASE2_ERROR_PREDICTED as PHASE2_ERROR_PREDICTED,
    PHASE2_ERROR_TOLERANCE as PHASE2_ERROR_TOLERANCE,
    attention_ablation as attention_ablation,
    phase2_scan as phase2_scan,
)
from .t1 import (
    initial_rate as initial_rate,
    t1_full_model as t1_full_model,
    t1_scaling as t1_scaling,
    t1_vs_width as t1_vs_width,
)
