"""Word co-occurrence (Yang, Kailkhura, Wang & Liang, NeurIPS 2024): the reference system.

Data (`data`), the paper's shallow transformer (`model`), its tracked quantities (`observables`),
the 14 verdicts (`verdicts`), figures (`figures`), the system class (`system`) and the theory
(`theory`: the exact reduced Gram flow, the Phase-2 system, the predictions).
"""

from .config import INITS as INITS, CooccurrenceConfig as CooccurrenceConfig, n_random_slots as n_random_slots
from .data import (
    CooccurrenceData as CooccurrenceData,
    make_dataset as make_dataset,
    sample_population as sample_population,
)
from .model import CooccurrenceTransformer as CooccurrenceTransformer, init_transformer as init_transformer
from .observables import (
    CooccurrenceObserver as CooccurrenceObserver,
    balance_fixed_point as balance_fixed_point,
    margin_observables as margin_observables,
    random_token_overlap as random_token_overlap,
)
from .system import (
    PHASE1_END as PHASE1_END,
    PHASE1_EVENT as PHASE1_EVENT,
    SYSTEM as SYSTEM,
    CooccurrenceSystem as CooccurrenceSystem,
    min_margin as min_margin,
)
from .verdicts import VERDICT_NEEDS as VERDICT_NEEDS, evaluate as evaluate
