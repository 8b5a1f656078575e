"""Report: tables (:mod:`~medlens.report.tables`), figures (:mod:`~medlens.report.figures`) and the
self-contained HTML page (:mod:`~medlens.report.html`) of a study's ``results.json``."""

from medlens.report import figures, html, tables

__all__ = ["figures", "html", "tables"]
