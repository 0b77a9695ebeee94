"""humpback: instruction backtranslation data engine."""
__version__ = "0.1.0"
