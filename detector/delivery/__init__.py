"""Getting events out and commands in: the durable outbox, the publisher, MQTT, the embedded broker,
and the camera re-check command.
"""
