"""Quality of synthetic images: FID and KID in an in-domain feature space, and a copy check.

FID and KID are usually computed on Inception-v3 features. Inception weights are not available
offline, and ImageNet features say little about ultrasound or X-ray texture anyway, so medlens uses
an **in-domain** extractor: a compact 2D CNN (the ``cnn`` model) trained by medlens to classify the
real images of the same modality; its globally pooled last convolutional block gives the features.
Numbers are therefore comparable only within one extractor (one dataset and seed), never with
published Inception FIDs. The FID of two disjoint sets of real images (real-versus-real) is the floor
a generator can hope to reach with that extractor.
"""

from __future__ import annotations

import numpy as np
import torch

from medlens.data.dataset import ArrayDataset
from medlens.errors import ConfigError
from medlens.models.registry import build


class FeatureExtractor:
    """Penultimate-layer features of a ``cnn`` classifier trained on real labelled images.

    Parameters
    ----------
    width, depth, epochs : int
        Size and training length of the compact CNN.
    seed : int
    """

    def __init__(self, width: int = 16, depth: int = 3, epochs: int = 10, seed: int = 0):
        self.params = {"arch": "compact", "width": width, "depth": depth, "epochs": epochs, "patience": None,
                       "seed": seed}
        self.model = None

    def fit(self, data: ArrayDataset) -> "FeatureExtractor":
        """Train the classifier on ``data`` (2D images ``(N, C, H, W)``)."""
        self.model = build("cnn", **self.params).fit(data)
        return self

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(N, F)`` float64 features of ``(N, C, H, W)`` images in the classifier's input scale."""
        if self.model is None:
            raise ConfigError("synth.quality: FeatureExtractor used before fit")
        body = self.model.network_[:-2].eval()  # drop dropout and the linear classifier
        x = torch.from_numpy((np.asarray(images, dtype=np.float32) - self.model.mean_) / self.model.std_)
        return torch.cat([body(x[i:i + 512]) for i in range(0, len(x), 512)]).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets (FID; Heusel et al., NeurIPS 2017).

    ``FID = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((Σ_a Σ_b)^{1/2}) = Σ_i √λ_i with λ_i the eigenvalues of Σ_a Σ_b (real and ≥ 0 for a product of
    # two PSD matrices); this avoids sqrtm's failure on the singular covariances of ReLU features.
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b).real
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10, subset_size: int = 200,
                    seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al., *Demystifying MMD GANs*, ICLR 2018): mean and standard deviation over
    ``subsets`` random subsets of the unbiased MMD² with the cubic kernel ``k(x, y) = (xᵀy / d + 1)³``.

    ``MMD²_u = [Σ_{i≠j} k(a_i, a_j)] / m(m−1) + [Σ_{i≠j} k(b_i, b_j)] / m(m−1) − 2 Σ_{i,j} k(a_i, b_j) / m²``.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ConfigError("synth.quality: KID needs at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                      - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def nearest_distances(queries: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Euclidean pixel distance from each query image to its nearest image in ``reference``
    (``exclude_self``: queries are the reference itself, skip the zero self-distance)."""
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.empty(len(q))
    r_sq = (r ** 2).sum(1)
    for i in range(0, len(q), 256):
        block = q[i:i + 256]
        d2 = (block ** 2).sum(1)[:, None] + r_sq[None] - 2 * block @ r.T
        if exclude_self:
            d2[np.arange(len(block)), np.arange(i, i + len(block))] = np.inf
        out[i:i + 256] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


def copy_check(samples: np.ndarray, train: np.ndarray, held_out: np.ndarray) -> dict:
    """Are synthetic images copies of training images?

    Compares each sample's nearest-training-image distance with the same distance for real images
    the generator never saw (``held_out``). A generator that memorises produces samples much closer
    to the training set than new real images are. ``copy_fraction`` is the share of samples closer
    to a training image than the 1st percentile of the held-out distances.

    Returns
    -------
    dict
        ``sample_nn_median``, ``held_out_nn_median``, ``ratio`` (sample / held-out median) and
        ``copy_fraction``.
    """
    ds, dh = nearest_distances(samples, train), nearest_distances(held_out, train)
    floor = float(np.percentile(dh, 1))
    return {"sample_nn_median": float(np.median(ds)), "held_out_nn_median": float(np.median(dh)),
            "ratio": float(np.median(ds) / np.median(dh)), "copy_threshold": floor,
            "copy_fraction": float((ds < floor).mean())}


def quality_report(extractor: FeatureExtractor, real: np.ndarray, other_real: np.ndarray, synthetic: np.ndarray,
                   train: np.ndarray, seed: int = 0) -> dict:
    """FID and KID of ``synthetic`` against ``real``, the real-versus-real floor (``other_real`` against
    ``real``), and :func:`copy_check` of ``synthetic`` against ``train`` with ``other_real`` held out."""
    f_real, f_other, f_syn = extractor(real), extractor(other_real), extractor(synthetic)
    kid, kid_std = kernel_distance(f_real, f_syn, seed=seed)
    kid_floor, kid_floor_std = kernel_distance(f_real, f_other, seed=seed)
    return {"fid": frechet_distance(f_real, f_syn), "fid_real_vs_real": frechet_distance(f_real, f_other),
            "kid": kid, "kid_std": kid_std, "kid_real_vs_real": kid_floor, "kid_real_vs_real_std": kid_floor_std,
            "extractor": "medlens cnn (compact) trained on the real training images; not Inception",
            **copy_check(synthetic, train, other_real)}
