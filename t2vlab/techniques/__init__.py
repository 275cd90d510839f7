"""Techniques from papers, one paper per module; each takes the models it changes as arguments (layer 3)."""
