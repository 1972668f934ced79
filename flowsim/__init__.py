"""flowsim: training dynamics of shallow transformers as numerical ODEs.

The data flow is config -> task -> problem -> dynamics -> solve -> observables -> verdicts:

    >>> import flowsim
    >>> s = flowsim.setup(flowsim.Config())                      # the paper's experiment
    >>> flow = flowsim.integrate(flowsim.GradientFlow(), s.problem, ts, s.observer,
    ...                          event=flowsim.min_margin)       # diffrax, adaptive
    >>> gd = flowsim.gradient_descent(s.problem, 0.01, steps, s.observer)

Importing flowsim does not change JAX's global configuration; `flowsim.setup` switches JAX to
64-bit when the config asks for float64 (the default).
"""

import importlib.metadata

from .config import Config as Config, ConfigError as ConfigError
from .discrete import DiscreteSolution as DiscreteSolution, gradient_descent as gradient_descent, sgd as sgd
from .dynamics import AbstractDynamics as AbstractDynamics, GradientFlow as GradientFlow
from .experiment import (
    ExperimentResult as ExperimentResult,
    Setup as Setup,
    generalization_loss as generalization_loss,
    min_margin as min_margin,
    run_experiment as run_experiment,
    run_flow as run_flow,
    run_gd as run_gd,
    run_sgd as run_sgd,
    save_experiment as save_experiment,
    setup as setup,
)
from .flow import FlowError as FlowError, FlowSolution as FlowSolution, integrate as integrate
from .grid import save_steps as save_steps
from .model import CooccurrenceTransformer as CooccurrenceTransformer, init_transformer as init_transformer
from .observables import (
    CooccurrenceObserver as CooccurrenceObserver,
    balance_fixed_point as balance_fixed_point,
    margin_observables as margin_observables,
    random_token_overlap as random_token_overlap,
)
from .problem import Problem as Problem, logistic_loss as logistic_loss, make_problem as make_problem
from .results import RunData as RunData, load_run as load_run
from .tasks.cooccurrence import (
    CooccurrenceData as CooccurrenceData,
    make_dataset as make_dataset,
    sample_population as sample_population,
)
from .verdicts import Verdict as Verdict, evaluate as evaluate

__version__ = importlib.metadata.version("flowsim")
