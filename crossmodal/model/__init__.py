"""Models: which model a spec names (specs), the encoder that runs it (encoder), fine-tuning
(training). The only package that imports open_clip and torch, and only when an encoder is made.
"""
