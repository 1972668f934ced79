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

from . import nn as nn
from ._adaptive_flows import AdamFlow as AdamFlow, RMSPropFlow as RMSPropFlow, SignGradientFlow as SignGradientFlow
from ._checkpoint import (
    Checkpoint as Checkpoint,
    checkpoint_info as checkpoint_info,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
)
from ._compare import Curve as Curve, compare as compare, compare_lrs as compare_lrs, distance_to_sgd as distance_to_sgd
from ._config import SOLVERS as SOLVERS, Config as Config, RunConfig as RunConfig
from ._descent_loop import Stop as Stop
from ._discrete import DiscreteSolution as DiscreteSolution, gradient_descent as gradient_descent, sgd as sgd
from ._dyck import (
    DyckLanguage as DyckLanguage,
    acceptance_rate as acceptance_rate,
    closing_accuracy as closing_accuracy,
    depths as depths,
    lm_batch as lm_batch,
    matching_open as matching_open,
    sample_dyck as sample_dyck,
    structure as structure,
)
from ._dynamics import (
    AbstractDynamics as AbstractDynamics,
    AbstractFlow as AbstractFlow,
    GradientFlow as GradientFlow,
    HeavyBallFlow as HeavyBallFlow,
    ModifiedFlow as ModifiedFlow,
    SGDModifiedEquation as SGDModifiedEquation,
)
from ._events import Event as Event, locate_discrete as locate_discrete
from ._experiment import (
    ExperimentResult as ExperimentResult,
    LossBelow as LossBelow,
    enable_precision as enable_precision,
    run_experiment as run_experiment,
    run_flow as run_flow,
    run_gd as run_gd,
    run_sgd as run_sgd,
    save_experiment as save_experiment,
    setup as setup,
    step_grid as step_grid,
    summarize as summarize,
    target_events as target_events,
)
from ._fields import ConfigError as ConfigError, check_fields as check_fields, field as field
from ._figure_style import output_format as output_format, save_figure as save_figure
from ._grid import save_steps as save_steps
from ._hessian import (
    HessianEigs as HessianEigs,
    Sharpness as Sharpness,
    dense_hessian as dense_hessian,
    hessian_eigs as hessian_eigs,
    hessian_top_eigs as hessian_top_eigs,
    hvp as hvp,
    sharpness as sharpness,
)
from ._integrate import integrate as integrate
from ._losses import (
    cross_entropy_loss as cross_entropy_loss,
    logistic_loss as logistic_loss,
    squared_loss as squared_loss,
)
from ._measures import measures_of as measures_of
from ._optax import optax_descent as optax_descent
from ._phase_diagram import (
    load_sweep as load_sweep,
    phase_diagram_figure as phase_diagram_figure,
    plot_phase_diagram as plot_phase_diagram,
)
from ._plots import (
    comparison_figure as comparison_figure,
    distance_vs_lr_figure as distance_vs_lr_figure,
    overlay_figure as overlay_figure,
    plot_comparison as plot_comparison,
    plot_distance_vs_lr as plot_distance_vs_lr,
    plot_overlay as plot_overlay,
)
from ._problem import Problem as Problem, make_problem as make_problem
from ._registry import (
    default_system as default_system,
    get_system as get_system,
    register as register,
    registered_systems as registered_systems,
)
from ._results import RunData as RunData, load_run as load_run
from ._rkc import RKC as RKC
from ._sde import EnsembleSolution as EnsembleSolution, integrate_sde as integrate_sde
from ._solution import EventHit as EventHit, FlowError as FlowError, FlowSolution as FlowSolution
from ._step_stats import StepStats as StepStats
from ._sweep_run import SweepReport as SweepReport, run_point as run_point, run_sweep as run_sweep
from ._sweep_spec import (
    SpecMismatchError as SpecMismatchError,
    SweepSpec as SweepSpec,
    SweepSpecError as SweepSpecError,
)
from ._system import (
    AbstractSystem as AbstractSystem,
    Measure as Measure,
    Prediction as Prediction,
    RunKeys as RunKeys,
    RunRecord as RunRecord,
    Setup as Setup,
)
from ._tables import SweepRows as SweepRows
from ._trajectory import Trajectory as Trajectory, solve_discrete as solve_discrete, solve_flow as solve_flow
from ._verdicts import (
    Verdict as Verdict,
    format_table as format_table,
    loglog_slope as loglog_slope,
    rel_gap as rel_gap,
    verdict as verdict,
)

# The reference system's public names, importable from flowsim as before the engine/systems split.
from .systems.cooccurrence import (
    CooccurrenceConfig as CooccurrenceConfig,
    CooccurrenceData as CooccurrenceData,
    CooccurrenceObserver as CooccurrenceObserver,
    CooccurrenceTransformer as CooccurrenceTransformer,
    balance_fixed_point as balance_fixed_point,
    init_transformer as init_transformer,
    make_dataset as make_dataset,
    margin_observables as margin_observables,
    min_margin as min_margin,
    random_token_overlap as random_token_overlap,
    sample_population as sample_population,
)

__version__ = importlib.metadata.version("flowsim")
