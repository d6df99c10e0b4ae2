"""The conv family (not yet implemented)."""
__all__: list = []
