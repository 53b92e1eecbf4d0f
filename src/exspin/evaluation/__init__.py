"""Execution accuracy: judge predictions on a split and write results and a report."""

from exspin.evaluation.evaluate import EvalResult, evaluate, write_results
from exspin.evaluation.prediction_files import read_predictions

__all__ = ["EvalResult", "evaluate", "read_predictions", "write_results"]
