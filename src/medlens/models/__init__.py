"""Models: one registry, one interface (fit on an ArrayDataset, predict class probabilities)."""
