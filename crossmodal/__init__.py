"""crossmodal."""
