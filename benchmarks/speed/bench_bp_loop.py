"""Why the BP network keeps its own training loop: its fit against the same training through the Trainer.

The default study's ``bp`` model (16 sigmoid units on the Gabor statistics of the LIDC nodules, full-batch
Adam lr 0.02, L2 0.01, 2000 iterations, binary cross-entropy on one sigmoid output) is fitted on the training
part of fold 0 two ways, each ``--repeats`` times in turn, on one thread:

* ``own loop``: :meth:`medlens.models.mlp.BPNetwork.fit`, one full-batch step per iteration;
* ``Trainer``: the same network, initial weights, optimiser and loss through
  :class:`medlens.engine.trainer.Trainer` with the whole training set as one batch (``batch_size`` = N) for
  2000 epochs, autocast off, no validation: one epoch per iteration.

It prints the median seconds per fit, the ratio, and the largest difference between the two fits'
probabilities on the fold's test part (the Trainer shuffles and seeds differently, so the weights differ).

    MEDLENS_DATA=../shared/data python benchmarks/speed/bench_bp_loop.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import TensorDataset

from medlens.config import default_config_path, load_config
from medlens.engine.threads import torch_threads
from medlens.engine.trainer import TrainConfig, Trainer
from medlens.evaluate.protocol import make_folds
from medlens.models.features import design_matrix
from medlens.models.pipeline import build_pipeline, prepare_features
from medlens.study import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(default_config_path())
    entry = next(m for m in config.models if m.key == "bp")
    params = {**entry.params, "seed": 0}
    pipeline = build_pipeline(entry.name, params, config.features)
    data = prepare_features(load_dataset(config), pipeline.steps)
    fold = make_folds(data, config.protocol, config.protocol.folds, config.seed)[0]
    train, test = data.subset(fold.train), data.subset(fold.test)

    own, through_trainer = [], []
    p_own = p_trainer = None
    with torch_threads(1):
        for _ in range(args.repeats):
            model = build_pipeline(entry.name, params, config.features).model
            start = time.perf_counter()
            model.fit(train)
            own.append(time.perf_counter() - start)
            p_own = model.predict_proba(test)[:, 1]

            twin = build_pipeline(entry.name, params, config.features).model
            twin.n_classes_ = 2
            twin.scaler_ = StandardScaler().fit(design_matrix(train, twin.inputs, twin.features))
            x = twin._inputs(train)
            torch.manual_seed(0)
            network = twin._network(x.shape[1], 1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits
            trainer = Trainer(network, lambda out, y: loss(out[:, 0], y.float()),
                              TrainConfig(epochs=twin.iterations, batch_size=len(x), lr=twin.lr,
                                          weight_decay=twin.weight_decay, optimizer="adam", patience=None,
                                          amp="off", channels_last=False, progress=False, seed=0))
            start = time.perf_counter()
            trainer.fit(TensorDataset(x, torch.as_tensor(train.labels)))
            through_trainer.append(time.perf_counter() - start)
            twin.network_ = copy.deepcopy(network).eval()
            p_trainer = twin.predict_proba(test)[:, 1]
    a, b = float(np.median(own)), float(np.median(through_trainer))
    print(f"BP fit, {len(train)} nodules x {x.shape[1]} features, 2000 full-batch steps, 1 thread, "
          f"median of {args.repeats}")
    print(f"| loop | seconds per fit | ratio |\n|---|---|---|\n| own loop | {a:.2f} | 1.00 |\n"
          f"| Trainer (batch = N) | {b:.2f} | {b / a:.2f} |")
    print(f"largest |Δp| on the test fold between the two fits: {np.abs(p_own - p_trainer).max():.3f}")


if __name__ == "__main__":
    main()
