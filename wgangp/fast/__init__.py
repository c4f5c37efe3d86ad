"""Opt-in speed (the ``speed=`` config group): the same numbers as the textbook step,
sooner. Nothing below this layer imports it; ``speed=off`` runs without any of it."""
