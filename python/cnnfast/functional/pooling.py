"""The pooling family (not yet implemented)."""
__all__: list = []
