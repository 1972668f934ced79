"""Reduced systems of the co-occurrence transformer's gradient flow (see `theory/` for derivations)."""

from .attention import attention_displacement_vs_L as attention_displacement_vs_L
from .attention import score_change_projections as score_change_projections
from .attention import theory_C_scale as theory_C_scale
from .gram import GramModel as GramModel
from .gram import GramObserver as GramObserver
from .gram import ReducedGramFlow as ReducedGramFlow
from .gram import gram_of as gram_of
from .gram import gram_problem as gram_problem
from .gram import loss_from_SG as loss_from_SG
from .gram import reduce_problem as reduce_problem
from .gram import wishart_gram as wishart_gram
from .phase2 import Phase2Model as Phase2Model
from .phase2 import Phase2System as Phase2System
from .phase2 import attention_ablation as attention_ablation
from .phase2 import balancing_summary as balancing_summary
from .phase2 import compare_phase2 as compare_phase2
from .phase2 import loss_law_fit as loss_law_fit
from .phase2 import phase2_observer as phase2_observer
from .phase2 import phase2_problem as phase2_problem
from .phase2 import phase2_scan as phase2_scan
from .t1 import initial_rate as initial_rate
from .t1 import t1_full_model as t1_full_model
from .t1 import t1_scaling as t1_scaling
from .t1 import t1_vs_width as t1_vs_width
