"""Evaluation: metrics on the held-out test split, and the figures that go with them."""
