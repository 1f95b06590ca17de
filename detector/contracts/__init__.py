"""What the detector shares with the API and ``training/``: the data shapes and messages both sides read.

``detections`` (the one representation of detections), ``manifest`` (``models/manifest.yaml``),
``artifacts`` (the sha256 of the manifest's files, checked when one is loaded),
``events`` (the violation event v1: ids, builder, validators), ``recheck`` (the camera re-check: topics,
builders, validators), ``schemas`` (the JSON Schemas beside this file and their ``date-time`` rule),
``ultralytics_env`` (ultralytics kept offline), ``logs`` (text or JSON log lines),
``frames`` (``FrameRecord``, the sidecar of a collected
frame), ``errors`` (``DetectorError``, the detector's error root).

A leaf: nothing here imports the rest of ``detector/`` (``lint-imports``, README "Layout"), so the API
and training import it without the pipeline, torch or OpenCV.
"""
