"""Image enhancement: noise models, denoising autoencoders, classical baselines, quality metrics, DICOM output."""
