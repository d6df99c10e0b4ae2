"""The dropout family (not yet implemented)."""
__all__: list = []
