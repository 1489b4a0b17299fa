"""Measuring models: retrieval and zero-shot evaluation (evaluation), and the synthetic shapes
the shipped model is trained and tested on (synthetic)."""
