"""The normalization family (not yet implemented)."""
__all__: list = []
