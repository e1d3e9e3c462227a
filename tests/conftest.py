"""Shared fixtures: the trained reference model and its visualisations (tests/reference_fixtures.py)."""
from tests.reference_fixtures import reference, reference_visualizations, releases  # noqa: F401
