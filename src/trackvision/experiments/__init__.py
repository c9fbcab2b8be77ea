"""Analyses across many runs (learning curves), read back from the tracking store."""
