"""One module per pane of the monitor screen."""
from .alerts import AlertsPane
from .banner import Banner
from .log_pane import LogPane
from .metrics_table import MetricsTable
from .plots import PLOT_SPECS, MetricPlot, PlotSpec, SeriesSpec
from .progress import ProgressInfo, ProgressPane
from .run_header import RunHeader

__all__ = ["PLOT_SPECS", "AlertsPane", "Banner", "LogPane", "MetricPlot", "MetricsTable", "PlotSpec",
           "ProgressInfo", "ProgressPane", "RunHeader", "SeriesSpec"]
