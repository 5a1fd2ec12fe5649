"""FISA reproduction harness: models, data, metrics, training and evaluation."""
__version__ = "0.1.0"
