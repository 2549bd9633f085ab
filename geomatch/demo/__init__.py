"""The offline end-to-end demo (``geomatch demo``): a synthetic 3-D world in the
SPair-71k layout (:mod:`.world`, :mod:`.synthetic`), a weight-free featurizer
(:mod:`.featurizers`), the run's settings, steps, report and figures
(:mod:`.settings`, :mod:`.steps`, :mod:`.report`, :mod:`.figures`) and the run
itself (:mod:`.run`); :mod:`.sweep` checks the settings over seeds."""
from .figures import (FIGURE_RULE, pair_outcomes, plot_confusions, plot_training,  # noqa: F401
                      plot_transfer_comparison, save_figure, select_figure_pairs)
from .report import (CAVEAT, comparison_tables, confusion_counts, headline_rows,  # noqa: F401
                     headline_table, metrics_summary, next_steps, write_report)
from .run import configure_parser, run_cli, run_demo  # noqa: F401
from .settings import FULL, QUICK, DemoSettings  # noqa: F401
from .steps import MARKER, featurize_dataset, predictions  # noqa: F401
from .threads import limit_threads  # noqa: F401

__all__ = ["DemoSettings", "FULL", "QUICK", "run_demo", "featurize_dataset", "predictions",
           "confusion_counts", "metrics_summary", "headline_rows", "headline_table",
           "comparison_tables", "write_report", "next_steps", "CAVEAT", "FIGURE_RULE",
           "select_figure_pairs", "pair_outcomes", "plot_transfer_comparison",
           "plot_confusions", "plot_training", "save_figure", "limit_threads", "MARKER",
           "configure_parser", "run_cli"]
