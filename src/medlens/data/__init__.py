"""Datasets: the catalogue of public sets, readers for medical formats, splits and dataset objects."""
