"""Trained models that travel: one bundle format for every artefact, and training, prediction,
explanation and export built on it."""
