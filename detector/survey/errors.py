"""The survey's own exceptions; every message says what to do about it."""

from __future__ import annotations

from detector.contracts.errors import DetectorError


class SurveyError(DetectorError):
    """A survey cannot run or cannot go on."""


class SurveyInputError(SurveyError):
    """The input (video, telemetry, photos, baseline) is missing or unusable."""


class GeoreferenceError(SurveyError):
    """Frames cannot be placed on the ground: height, focal length or sensor size unknown."""


class SurveyResumeError(SurveyError):
    """``--resume`` was asked for a work folder made by a different run, or none exists."""


class SurveyPublishError(SurveyError):
    """Cases could not be handed to the MQTT outbox."""
