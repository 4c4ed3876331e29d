"""Does the receptive field adapt? The paper's attention analysis (Fig. 3 and 4; docs/paper.md, 'Attention analysis').

Usable on any model that contains :class:`~sknet.layers.SKConv`::

    result = sknet.analysis.analyze(model, dataset, scales=(1.0, 1.5, 2.0))
    sknet.analysis.write_report(result, "runs/analysis", title="sknet50 on ImageNet val")

- :mod:`~sknet.analysis.attention`: the paper's unit names and :class:`AttentionRecorder` (forward hooks);
- :mod:`~sknet.analysis.scaling`: enlarging the central object (:func:`scale_center`);
- :mod:`~sknet.analysis.summary`: the numbers of Fig. 3 and 4 (:func:`analyze`, :func:`compare_runs`);
- :mod:`~sknet.analysis.report`: JSON, CSV, Markdown and PNG files of them;
- :mod:`~sknet.analysis.study`: the small-scale replication grid (``sknet study``).
"""

from .attention import AttentionRecorder, SKUnit, find_sk_units, receptive_field, select_units
from .report import compare_folders, write_comparison, write_report
from .scaling import scale_center, scaled_batches
from .summary import AnalysisResult, AttentionStats, analyze, compare_runs, default_units, run_analysis, summarize

__all__ = [
    "AnalysisResult",
    "AttentionRecorder",
    "AttentionStats",
    "SKUnit",
    "analyze",
    "compare_folders",
    "compare_runs",
    "default_units",
    "find_sk_units",
    "receptive_field",
    "run_analysis",
    "scale_center",
    "scaled_batches",
    "select_units",
    "summarize",
    "write_comparison",
    "write_report",
]
