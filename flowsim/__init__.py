"""flowsim: training dynamics of small transformers as numerical ODEs, against discrete training.

The engine is system-agnostic: config -> system setup (data, model, problem, observer, events) ->
dynamics -> solve (diffrax for continuous dynamics, `lax.scan` for GD/SGD) -> observables and events
-> verdicts, results folders, figures. Systems live in `flowsim.systems` (one folder each):

    >>> import flowsim
    >>> s = flowsim.setup(flowsim.Config())                      # the default system: co-occurrence
    >>> flow = flowsim.run_flow(s)                               # diffrax, adaptive, events located
    >>> gd = flowsim.run_gd(s)

Importing flowsim does not change JAX's global configuration; `flowsim.setup` switches JAX to
64-bit when the config asks for float64 (the default).
"""

import importlib.metadata

from ._compare import Curve as Curve
from ._compare import compare as compare
from ._compare import compare_lrs as compare_lrs
from ._compare import distance_to_sgd as distance_to_sgd
from ._config import SOLVERS as SOLVERS
from ._config import Config as Config
from ._config import RunConfig as RunConfig
from ._discrete import DiscreteSolution as DiscreteSolution
from ._discrete import gradient_descent as gradient_descent
from ._discrete import sgd as sgd
from ._dynamics import AbstractDynamics as AbstractDynamics
from ._dynamics import AbstractFlow as AbstractFlow
from ._dynamics import GradientFlow as GradientFlow
from ._dynamics import HeavyBallFlow as HeavyBallFlow
from ._dynamics import ModifiedFlow as ModifiedFlow
from ._dynamics import SGDModifiedEquation as SGDModifiedEquation
from ._events import Event as Event
from ._events import locate_discrete as locate_discrete
from ._experiment import ExperimentResult as ExperimentResult
from ._experiment import enable_precision as enable_precision
from ._experiment import run_experiment as run_experiment
from ._experiment import run_flow as run_flow
from ._experiment import run_gd as run_gd
from ._experiment import run_sgd as run_sgd
from ._experiment import save_experiment as save_experiment
from ._experiment import setup as setup
from ._experiment import step_grid as step_grid
from ._experiment import summarize as summarize
from ._fields import ConfigError as ConfigError
from ._fields import check_fields as check_fields
from ._fields import field as field
from ._grid import save_steps as save_steps
from ._integrate import integrate as integrate
from ._losses import cross_entropy_loss as cross_entropy_loss
from ._losses import logistic_loss as logistic_loss
from ._losses import squared_loss as squared_loss
from ._measures import measures_of as measures_of
from ._phase_diagram import load_sweep as load_sweep
from ._phase_diagram import plot_phase_diagram as plot_phase_diagram
from ._plots import plot_comparison as plot_comparison
from ._plots import plot_distance_vs_lr as plot_distance_vs_lr
from ._plots import plot_overlay as plot_overlay
from ._problem import Problem as Problem
from ._problem import make_problem as make_problem
from ._registry import default_system as default_system
from ._registry import get_system as get_system
from ._registry import register as register
from ._registry import registered_systems as registered_systems
from ._results import RunData as RunData
from ._results import load_run as load_run
from ._sde import EnsembleSolution as EnsembleSolution
from ._sde import integrate_sde as integrate_sde
from ._solution import EventHit as EventHit
from ._solution import FlowError as FlowError
from ._solution import FlowSolution as FlowSolution
from ._sweep_run import SweepReport as SweepReport
from ._sweep_run import run_point as run_point
from ._sweep_run import run_sweep as run_sweep
from ._sweep_spec import SpecMismatchError as SpecMismatchError
from ._sweep_spec import SweepSpec as SweepSpec
from ._sweep_spec import SweepSpecError as SweepSpecError
from ._system import AbstractSystem as AbstractSystem
from ._system import Measure as Measure
from ._system import Prediction as Prediction
from ._system import RunKeys as RunKeys
from ._system import RunRecord as RunRecord
from ._system import Setup as Setup
from ._trajectory import Trajectory as Trajectory, solve_discrete as solve_discrete, solve_flow as solve_flow
from ._verdicts import Verdict as Verdict
from ._trajectory import Trajectory as Trajectory, solve_discrete as solve_discrete, solve_flow as solve_flow
from ._verdicts import format_table as format_table
from ._trajectory import Trajectory as Trajectory, solve_discrete as solve_discrete, solve_flow as solve_flow
from ._verdicts import loglog_slope as loglog_slope
from ._trajectory import Trajectory as Trajectory, solve_discrete as solve_discrete, solve_flow as solve_flow
from ._verdicts import rel_gap as rel_gap
from ._trajectory import Trajectory as Trajectory, solve_discrete as solve_discrete, solve_flow as solve_flow
from ._verdicts import verdict as verdict

# The reference system's public names, importable from flowsim as before the engine/systems split.
from .systems.cooccurrence import CooccurrenceConfig as CooccurrenceConfig
from .systems.cooccurrence import CooccurrenceData as CooccurrenceData
from .systems.cooccurrence import CooccurrenceObserver as CooccurrenceObserver
from .systems.cooccurrence import CooccurrenceTransformer as CooccurrenceTransformer
from .systems.cooccurrence import balance_fixed_point as balance_fixed_point
from .systems.cooccurrence import init_transformer as init_transformer
from .systems.cooccurrence import make_dataset as make_dataset
from .systems.cooccurrence import margin_observables as margin_observables
from .systems.cooccurrence import min_margin as min_margin
from .systems.cooccurrence import random_token_overlap as random_token_overlap
from .systems.cooccurrence import sample_population as sample_population

__version__ = importlib.metadata.version("flowsim")
