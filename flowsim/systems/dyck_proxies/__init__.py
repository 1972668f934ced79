"""Simplified-proxy faithfulness on bounded Dyck languages (Friedman et al., ICML 2024).

The task and the splits of Murty et al. (`data`), the 2-layer causal model built from `flowsim.nn`
with its proxied forward pass (`model`), the proxies and their agreement (`proxies`), the tracked
quantities (`observables`), the per-run verdicts (`verdicts`), figures (`figures`) and the system
class (`system`).
"""

from .config import DyckProxiesConfig as DyckProxiesConfig
from .data import (
    SPLITS as SPLITS,
    SYSTEMATIC as SYSTEMATIC,
    DyckProxiesData as DyckProxiesData,
    DyckSplit as DyckSplit,
    deep_mask as deep_mask,
    make_data as make_data,
    numpy_rng as numpy_rng,
)
from .model import DyckLM as DyckLM, QKProxy as QKProxy, init_model as init_model, lm_loss as lm_loss
from .observables import DyckObserver as DyckObserver, closing_accuracies as closing_accuracies
from .proxies import (
    FAMILIES as FAMILIES,
    build_proxies as build_proxies,
    close_argmax as close_argmax,
    kmeans as kmeans,
    study as study,
    summarise as summarise,
)
from .system import SYSTEM as SYSTEM, DyckProxiesSystem as DyckProxiesSystem, template as template
from .verdicts import (
    VERDICT_NEEDS as VERDICT_NEEDS,
    data_of as data_of,
    evaluate as evaluate,
    study_model as study_model,
)
