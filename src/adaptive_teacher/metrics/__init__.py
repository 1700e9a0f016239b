"""Evaluation: exact terminal distributions by dynamic programming, distances and mode counting."""

from adaptive_teacher.metrics.exact import ExactEvaluator
from adaptive_teacher.metrics.modes import ModeTracker

__all__ = ["ExactEvaluator", "ModeTracker"]
