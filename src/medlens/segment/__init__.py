"""Segmentation: a typed self-configuring plan, networks, losses, training, sliding-window inference,
post-processing chosen by cross-validation, evaluation (Dice, IoU, HD95, pixel error) and instance
analysis of cells and nuclei.

The flow is nnU-Net's, sized for a CPU: ``fingerprint`` → ``rules`` (``plan.json``, :mod:`~.plan`) →
``cv`` (fold models, metrics, post-processing decision) or ``train`` (one model, :mod:`~.bundle`) →
``predict`` (masks in each input's geometry, :mod:`~.infer`) → ``evaluate`` (metrics and overlays).
"""
