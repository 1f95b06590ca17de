"""Frames worth labelling: the detector keeps a bounded, per-stream sample of clean frames.

- ``record``: the sidecar (:class:`~detector.contracts.frames.FrameRecord`, schema version 1) and the
  layout ``<dir>/<stream>/<YYYY-MM-DD>/<frame_id>.jpg + .json``, re-exported from the contracts
  (``detector.contracts.frames``: training reads and writes the same files).
- ``policy``: what to keep (near a rule's threshold, two models disagreeing, a uniform sample per hour)
  and the per-stream, per-hour cap.
- ``collector``: the pipeline hook (``StreamPipeline.observer``), a bounded queue and one writer thread.
- ``store``: atomic writes, the running size index, the budget and the age limits.
- ``sync``: ``citywatch collect sync`` pulls the desk's verdicts (``GET /reviews``) into the sidecars.
- ``cli``: ``citywatch collect sync|stats`` (``export|import`` live in ``training.collect_cli``).

Nothing is imported here, so ``citywatch collect stats`` loads neither OpenCV nor a model.
"""
