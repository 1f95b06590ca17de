"""Drone survey batch runs: geo-referenced findings, one case per object, change against the last survey.

Entry points: :func:`detector.survey.runner.run_survey` and ``citywatch survey`` (:mod:`detector.survey.cli`).
Importing this package imports nothing heavy.
"""

from __future__ import annotations

from detector.survey.errors import (
    GeoreferenceError,
    SurveyError,
    SurveyInputError,
    SurveyPublishError,
    SurveyResumeError,
)

__all__ = ["GeoreferenceError", "SurveyError", "SurveyInputError", "SurveyPublishError", "SurveyResumeError"]
