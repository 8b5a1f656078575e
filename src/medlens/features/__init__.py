"""Feature extraction (Gabor, CNN maps, autoencoder codes, transfer) and the probes that score features."""
