"""Reduced systems of the co-occurrence transformer's gradient flow (see `theory/` for derivations)."""

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
from .predictions import t1_vs_width as t1_vs_width
