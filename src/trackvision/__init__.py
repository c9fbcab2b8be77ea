"""Tracked, reproducible image-classification experiments (DVC + MLflow + timm)."""

__version__ = "0.1.0"
