"""Unified Behavioral Segmentation."""

__version__ = "0.1.0"
