"""Evaluation: metrics, cross-validation splits, confidence intervals and calibration.

Modules: :mod:`~medlens.evaluate.metrics`, :mod:`~medlens.evaluate.splits`, :mod:`~medlens.evaluate.stats`,
:mod:`~medlens.evaluate.calibration`.
"""

from medlens.evaluate import calibration, metrics, splits, stats

__all__ = ["calibration", "metrics", "splits", "stats"]
