"""Data quality, measured: the paper's dataset table for any dialogue set (`ultrachat stats`)."""
