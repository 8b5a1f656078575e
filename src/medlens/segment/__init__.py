"""Segmentation: networks, losses, a self-configuring plan, training, sliding-window inference,
evaluation (Dice, IoU, HD95, pixel error) and instance analysis of cells and nuclei.

The flow is nnU-Net's, sized for a CPU: ``plan`` (fingerprint → plan.json) → ``train`` (bundle) →
``predict`` (masks in each input's geometry) → ``evaluate`` (metrics and overlays).
"""
