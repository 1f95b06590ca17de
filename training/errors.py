"""Errors of the training pipeline. Messages say what is wrong and what to do about it."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: `citywatch train|eval|export|models` print these without a traceback."""


class DatasetError(TrainingError):
    """The dataset yaml or its files are missing or malformed."""


class TrainError(TrainingError):
    """Training could not start, resume or finish."""


class EvalError(TrainingError):
    """A model could not be evaluated."""


class ExportError(TrainingError):
    """A model could not be exported."""


class RegistryError(TrainingError):
    """The model folder or manifest cannot take the requested change."""
