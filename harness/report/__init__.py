"""The report: report.html (self-contained), summary.json, cells.csv and console tables."""

from harness.report.render import ReportPaths, write_report

__all__ = ["ReportPaths", "write_report"]
