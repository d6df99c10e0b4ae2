"""The loss family (not yet implemented)."""
__all__: list = []
