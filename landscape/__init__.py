"""Re-check claims about how optimizers move through neural-network loss landscapes."""

__version__ = "0.1.0"
