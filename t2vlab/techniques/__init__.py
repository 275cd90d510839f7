"""Techniques: one paper or one outside rule per module, taking the models and the pipeline as arguments."""
