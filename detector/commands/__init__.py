"""The ``citywatch`` command and its subcommands (``run``, ``demo``, ``replay``, ``status``,
``eval-clips``); each hands its work to the pipeline packages.
"""
