"""What the detector shares with the API and ``training/``: the data shapes and messages both sides read.

``detections`` (the one representation of detections), ``manifest`` (``models/manifest.yaml``),
``events`` (the violation event v1: ids, builder, validators) and the JSON Schemas beside them.
"""
