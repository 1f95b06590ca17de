"""The real-footage regression suite: real clips and stills with written expectations.

``citywatch eval-clips EXPECTATIONS.yaml [--json] [--config streams.yaml] [--evidence-dir DIR]``
replays each video through the real pipeline (:func:`detector.commands.replay.replay`, the models the
config resolves for each rule) and runs each still through the models, then checks every
expectation. It prints, per clip, the cases opened per rule, the *false* ones (opened but not
expected) and the *missed* ones (expected but not opened), and totals with false cases per hour
of video. Exit 0 when every expectation holds, 1 when one does not, 2 on bad input.

The file (paths are relative to it)::

    version: 1
    defaults:                       # every clip's settings; a clip may override each key
      config: ../../streams.yaml    # models + defaults.rules come from here; `--config` overrides;
                                    # none: ./streams.yaml
      stream: null                  # a stream id of that config: its zones, rules, rule models;
                                    # none: one zone over the full frame with all four rules
      rules:                        # rule overrides, merged over the config's (like a stream's rules:)
        illegal_parking: {dwell_s: 30}
      sample_interval_s: 2          # none: the stream's
      start_time: 2026-06-01T10:00:00+08:00   # wall time of a video's first frame (active_hours);
                                    # none: the stream's, else the file's creation time or mtime
    clips:
      - video: videos/street.mp4    # a video: every case it opens must be expected
        name: street                # default: the file's stem
        must_open:                  # cases that must open
          - rule: illegal_parking
            where: [0.13, 0.28, 0.24, 0.43]   # box: the case's box centre lies in it;
                                              # [x, y]: the case's box contains the point;
                                              # none: anywhere
            count: 1                # exactly 1 (the default); or {min: 0, max: 1}: may open once
            note: silver sedan at the upper kerb, parked all clip
        must_not_open: [street_vending, unclean_road, illegal_structure]
      - image: images/bus.jpg       # a still: judged on detections, the rules' thresholds
        must_detect:
          - {label: vehicle, where: [0.0, 0.2, 1.0, 0.7], min_score: 0.5, note: the bus}
        max_score: {vendor: 0.35}   # a detection at or above it is false; default: vendor, litter
                                    # and structure at their rule's min_score (vehicle unchecked)
        allow:                      # may be detected there at any score (neither false nor needed)
          - {label: vendor, where: [0.0, 0.55, 0.12, 0.8], note: a vendor's handcart}

Strict by design: on a video every opened case is matched to a ``must_open`` entry of its rule
whose region it lies in (the entry still below its ``min`` first, else the nearest); a case no
entry takes, or one more than an entry's ``max``, is false, and so is every case of a rule in
``must_not_open`` or of a rule nobody expects. An entry left below its ``min`` is missed. On a
still, litter smaller than the rule's ``min_area`` is not judged (the rule would ignore it); a
detection used by a ``must_detect`` entry is not false. Labels: vehicle (illegal_parking), vendor
(street_vending), structure (illegal_structure), litter (unclean_road); a label is read from the
model that serves its rule (``rule_models``), through that rule's ``classes``. A still is judged
over the whole image (zones do not apply to stills; ``stream:`` picks its rules and models).
"""

from __future__ import annotations

from detector.commands.evalclips.cli import evaluate, failures, format_text, main
from detector.commands.evalclips.spec import ExpectationsError, load_expectations

__all__ = ["ExpectationsError", "evaluate", "failures", "format_text", "load_expectations", "main"]
