"""One module per pane of the monitor screen."""
from .alerts import AlertsPane
from .banner import Banner
from .checklist import ChecklistPane
from .keybar import KeyBar
from .log_pane import LogPane
from .metrics_table import MetricsTable
from .plots import PLOT_SPECS, MetricPlot, PlotSpec, PlotView, SeriesSpec
from .progress import ProgressInfo, ProgressPane
from .run_header import RunHeader
from .system_line import SystemLine
from .too_small import TooSmall
from .viewbar import ViewBar

__all__ = ["PLOT_SPECS", "AlertsPane", "Banner", "ChecklistPane", "KeyBar", "LogPane", "MetricPlot", "MetricsTable",
           "PlotSpec", "PlotView", "ProgressInfo", "ProgressPane", "RunHeader", "SeriesSpec", "SystemLine",
           "TooSmall", "ViewBar"]
