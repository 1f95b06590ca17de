"""MQTT ingest: violation events -> cases (idempotent on ``violation_id``, ordered by ``seq``)."""
