"""The torch Trainer on real BreastMNIST: early stopping, determinism, checkpoints, torchrun DDP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from medlens.engine import TrainConfig, Trainer, load_checkpoint, save_checkpoint
from medlens.engine.trainer import ema_decay
from medlens.errors import ConfigError, MissingPathError, ModelError, UnreadableFileError
from medlens.models.cnn import compact_cnn

from realdata import need

torch.set_num_threads(1)  # on the shared 2-core CPU one thread per process is fastest


@pytest.fixture(scope="module")
def breast(data_root):
    """BreastMNIST as float tensors in [0, 1]: (train, val, test) TensorDatasets."""
    z = np.load(need(data_root, "medmnist/breastmnist.npz"))

    def part(split):
        x = torch.from_numpy(z[f"{split}_images"][:, None].astype(np.float32) / 255.0)
        return TensorDataset(x, torch.from_numpy(z[f"{split}_labels"].ravel().astype(np.int64)))

    return part("train"), part("val"), part("test")


def auc(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(roc_auc_score(targets.numpy(), torch.softmax(outputs, 1)[:, 1].numpy()))


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return compact_cnn(2, 1, 2, width=8, depth=3)


def test_fit_learns_and_restores_best_epoch(breast):
    train, val, test = breast
    trainer = Trainer(small_cnn(), nn.CrossEntropyLoss(), TrainConfig(epochs=30, batch_size=64, lr=3e-3, patience=2,
                                                                       progress=False), score=auc)
    history = trainer.fit(train, val)
    n = len(history.train_loss)
    assert history.best_epoch < n - 1 < 29  # early stopping ended training after a worse last epoch
    assert len(history.val_score) == len(history.val_loss) == len(history.epoch_seconds) == n
    assert history.steps == n * int(np.ceil(len(train) / 64))
    assert history.best_epoch == int(np.argmax(history.val_score))
    assert n <= history.best_epoch + 1 + 2  # patience: at most 2 epochs without improvement
    # The weights kept are those of the best epoch: re-scoring val gives the recorded best score.
    assert auc(trainer.predict(val), val.tensors[1]) == pytest.approx(max(history.val_score), abs=1e-6)
    assert auc(trainer.predict(test), test.tensors[1]) > 0.75
    out = trainer.predict(test.tensors[0], batch_size=50)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (len(test), 2)
    assert torch.equal(out, trainer.predict(test))
    # A generic dataset (here a Subset: items collated by the DataLoader) gives the same outputs.
    assert torch.equal(trainer.predict(torch.utils.data.Subset(test, range(len(test)))), out)


def test_same_seed_same_weights_and_max_steps(breast):
    train, val, _ = breast
    cfg = TrainConfig(epochs=5, batch_size=32, max_steps=12, seed=3, progress=False)
    flips = lambda x: torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)  # noqa: E731
    runs = []
    for _ in range(2):
        trainer = Trainer(small_cnn(), nn.CrossEntropyLoss(), cfg, augment=flips)
        history = trainer.fit(train, val)
        runs.append(trainer.module.state_dict())
        assert history.steps == 12 and len(history.train_loss) == 1
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = Trainer(small_cnn(), nn.CrossEntropyLoss(), TrainConfig(epochs=1, batch_size=32, max_steps=12, seed=4,
                                                                    progress=False), augment=flips)
    other.fit(train, val)
    assert not torch.equal(other.module.state_dict()["0.weight"], runs[0]["0.weight"])


def test_ema_keeps_the_moving_average_of_weights_and_buffers(breast):
    """θ̄ after two steps is β₁ θ₁ + (1 − β₁) θ₂, θ_t being the raw weights (and BatchNorm statistics)
    after step t and β₁ = min(β, 1 − 2^(−3/4)) the warmed-up decay; the average is what validation
    scores and what the trainer keeps."""
    train, val, _ = breast

    def fit(steps: int, ema: float | None = None, with_val: bool = False):
        cfg = TrainConfig(epochs=1, batch_size=32, lr=3e-3, max_steps=steps, ema=ema, amp="off", progress=False)
        trainer = Trainer(small_cnn(), nn.CrossEntropyLoss(), cfg, score=auc)
        history = trainer.fit(train, val if with_val else None)
        return trainer, history

    first, second = fit(1)[0].module.state_dict(), fit(2)[0].module.state_dict()
    averaged, history = fit(2, ema=0.75, with_val=True)
    beta = 1 - 2**-0.75  # 0.405: the warm-up, not 0.75, sets the second step's decay
    assert ema_decay(0.75, 1) == pytest.approx(beta) and ema_decay(0.75, 100) == 0.75
    state = averaged.module.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, beta * first[key] + (1 - beta) * second[key], rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(value, second[key])
    assert not torch.allclose(state["0.weight"], second["0.weight"])  # not the raw weights
    assert auc(averaged.predict(val), val.tensors[1]) == pytest.approx(history.val_score[-1], abs=1e-6)
    with pytest.raises(ConfigError, match="train.ema"):
        TrainConfig(ema=1.0)


class _NaNOnce(nn.Module):
    """Cross-entropy whose first ``n`` calls return NaN (as a bf16 forward/backward sometimes does)."""

    def __init__(self, n: int = 1):
        super().__init__()
        self.left = n

    def forward(self, out, y):
        loss = nn.functional.cross_entropy(out, y)
        if self.left:
            self.left -= 1
            return loss * float("nan")
        return loss


def test_non_finite_gradient_is_skipped_and_bf16_turned_off(breast):
    train, val, test = breast
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, amp="bf16", progress=False)
    trainer = Trainer(small_cnn(), _NaNOnce(), cfg, score=auc)
    with pytest.warns(RuntimeWarning, match="non-finite gradient at optimiser step 0"):
        history = trainer.fit(train, val)
    assert history.skipped_steps == 1 and history.autocast_off_at_step == 0
    assert trainer.autocast_dtype is None
    assert history.steps == 2 * int(np.ceil(len(train) / 64)) - 1
    assert all(torch.isfinite(v).all() for v in trainer.module.state_dict().values() if v.is_floating_point())
    assert np.isfinite(history.train_loss).all() and auc(trainer.predict(test), test.tensors[1]) > 0.6
    fp32 = Trainer(small_cnn(), _NaNOnce(), TrainConfig(epochs=1, batch_size=64, amp="off", progress=False))
    with pytest.raises(ModelError, match="non-finite gradient at optimiser step 0 in float32"):
        fp32.fit(train, val)


def test_checkpoint_round_trip(breast, tmp_path):
    train, val, test = breast
    path = tmp_path / "best.pt"
    trainer = Trainer(small_cnn(), nn.CrossEntropyLoss(),
                      TrainConfig(epochs=3, batch_size=64, progress=False, checkpoint=str(path)), score=auc)
    history = trainer.fit(train, val)
    fresh = small_cnn(seed=99)
    info = load_checkpoint(path, fresh)
    assert info["epoch"] == history.best_epoch
    assert info["meta"]["score"] == pytest.approx(max(history.val_score))
    reloaded = Trainer(fresh, nn.CrossEntropyLoss(), trainer.config)
    assert torch.equal(reloaded.predict(test), trainer.predict(test))

    optimizer = torch.optim.Adam(fresh.parameters())
    fresh(test.tensors[0][:8]).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "again.pt", fresh, optimizer, epoch=7, meta={"note": "x"})
    target = small_cnn(seed=5)
    target_opt = torch.optim.Adam(target.parameters())
    assert load_checkpoint(tmp_path / "again.pt", target, target_opt) == {"epoch": 7, "meta": {"note": "x"}}
    assert target_opt.state_dict()["state"][0]["step"] == 1
    with pytest.raises(MissingPathError):
        load_checkpoint(tmp_path / "none.pt", target)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UnreadableFileError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt", target)
    with pytest.raises(UnreadableFileError, match="do not fit"):
        load_checkpoint(path, compact_cnn(2, 1, 3, width=8))


def test_fast_paths_chosen_by_network_and_config_checked():
    mlp = nn.Sequential(nn.Linear(4, 2))
    assert Trainer(mlp, nn.CrossEntropyLoss(), TrainConfig(device="cpu")).autocast_dtype is None
    conv2d = Trainer(compact_cnn(2, 1, 2), nn.CrossEntropyLoss(), TrainConfig(device="cpu"))
    assert conv2d.autocast_dtype is torch.bfloat16 and conv2d.memory_format is torch.channels_last
    conv3d = Trainer(compact_cnn(3, 1, 2), nn.CrossEntropyLoss(), TrainConfig(device="cpu"))
    assert conv3d.autocast_dtype is torch.bfloat16 and conv3d.memory_format is None
    forced = Trainer(compact_cnn(3, 1, 2), nn.CrossEntropyLoss(), TrainConfig(channels_last=True, amp="off"))
    assert forced.memory_format is torch.channels_last_3d and forced.autocast_dtype is None
    for bad in ({"optimizer": "lbfgs"}, {"scheduler": "step"}, {"amp": "fp16"}, {"epochs": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig(**bad)


DDP_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    from torch import nn
    from torch.utils.data import TensorDataset
    from medlens.engine import TrainConfig, Trainer, init_distributed, is_main_process
    from medlens.engine.distributed import rank, world_size
    from medlens.models.cnn import compact_cnn
    z = np.load(sys.argv[1])
    def part(split, n):
        x = torch.from_numpy(z[f"{split}_images"][:n, None].astype(np.float32) / 255.0)
        return TensorDataset(x, torch.from_numpy(z[f"{split}_labels"][:n].ravel().astype(np.int64)))
    init_distributed()
    torch.manual_seed(rank())  # different initial weights per rank: DDP must broadcast rank 0's
    module = compact_cnn(2, 1, 2, width=8)
    trainer = Trainer(module, nn.CrossEntropyLoss(), TrainConfig(epochs=3, batch_size=32, lr=3e-3, patience=None))
    history = trainer.fit(part("train", 546), part("val", 78))
    out = trainer.predict(part("test", 156))
    torch.manual_seed(10 + rank())
    averaged = compact_cnn(2, 1, 2, width=8)  # the same, keeping a moving average of the weights
    Trainer(averaged, nn.CrossEntropyLoss(), TrainConfig(epochs=2, batch_size=32, lr=3e-3, patience=None,
                                                         ema=0.9)).fit(part("train", 546), part("val", 78))
    torch.save({"state": module.state_dict(), "out": out, "steps": history.steps, "main": is_main_process(),
                "world": world_size(), "averaged": averaged.state_dict()}, f"{sys.argv[2]}/rank{rank()}.pt")
""")


def torchrun_two(script, *args, timeout: float) -> subprocess.CompletedProcess:
    """``script args`` run by ``torchrun`` as two processes of one thread each, their output captured."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)


def test_torchrun_two_processes_end_with_identical_weights(data_root, tmp_path):
    data = need(data_root, "medmnist/breastmnist.npz")
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    done = torchrun_two(script, data, tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["main"] and not r1["main"]
    # Each rank sees half of the 546 training images per epoch: 273 / 32 -> 9 steps per epoch.
    assert r0["steps"] == r1["steps"] == 3 * 9
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    assert all(torch.equal(r0["averaged"][k], r1["averaged"][k]) for k in r0["averaged"])
    assert torch.equal(r0["out"], r1["out"])
    test_labels = np.load(data)["test_labels"].ravel()
    assert roc_auc_score(test_labels, torch.softmax(r0["out"], 1)[:, 1].numpy()) > 0.7


class _Interrupted(Exception):
    """Raised inside a training batch, as a kill would stop it mid-epoch."""


@pytest.mark.parametrize("ema", [None, 0.9])
def test_a_fit_interrupted_mid_epoch_resumes_to_the_same_weights(breast, tmp_path, ema):
    """With resume checkpoints (:func:`resumable`), a fit stopped during its third epoch continues from the
    end of its second: weights, optimiser, cosine schedule, weight average, best epoch, early-stopping count
    and the random states of the shuffling and of the augmentation, so it ends exactly where an uninterrupted
    fit ends; a finished fit returns at once with its final weights."""
    from medlens.engine.trainer import resumable

    train, val, _ = breast
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3, scheduler="cosine", patience=3, ema=ema, progress=False)
    flips = lambda x: torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)  # noqa: E731
    steps_per_epoch = int(np.ceil(len(train) / 64))

    def trainer(stop_at: int | None = None) -> Trainer:
        count = [0]

        def augment(x):
            count[0] += 1
            if stop_at is not None and count[0] == stop_at:
                raise _Interrupted
            return flips(x)

        return Trainer(small_cnn(), nn.CrossEntropyLoss(), cfg, score=auc, augment=augment)

    reference = trainer()
    expected = reference.fit(train, val)
    interrupted = trainer(stop_at=2 * steps_per_epoch + 3)
    with resumable(tmp_path), pytest.raises(_Interrupted):
        interrupted.fit(train, val)
    assert (tmp_path / "fit0.pt").is_file()
    resumed = trainer()
    with resumable(tmp_path):
        history = resumed.fit(train, val)
    assert history.val_score == pytest.approx(expected.val_score) and history.best_epoch == expected.best_epoch
    assert history.steps == expected.steps
    for key, value in reference.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[key], value), key
    finished = trainer(stop_at=1)  # would fail on its first batch: a finished fit does not train again
    with resumable(tmp_path):
        finished.fit(train, val)
    assert all(torch.equal(finished.module.state_dict()[k], v) for k, v in reference.module.state_dict().items())


EXIT_AFTER_COLLECTIVES = textwrap.dedent("""
    import torch
    from torch import nn
    from medlens.engine.distributed import (all_reduce_sum, broadcast_buffers, broadcast_floats,
                                            init_distributed, wrap_ddp)
    def fit():  # as Trainer.fit: a DDP step, then the collectives on Python tensors that end each epoch
        ddp = wrap_ddp(nn.Linear(4, 2))
        ddp(torch.ones(3, 4)).sum().backward()
        norm = nn.BatchNorm1d(4)
        for _ in range(20):
            broadcast_buffers(norm)
            all_reduce_sum([1.0, 2.0], torch.device("cpu"))
            broadcast_floats([1.0, 2.0], torch.device("cpu"))
    init_distributed()
    fit()
""")


def test_processes_exit_cleanly_right_after_their_last_collective(tmp_path):
    # With DDP on the default group, this aborted about one launch in two on 2 busy cores
    # ("terminate called without an active exception", SIGABRT at interpreter exit).
    script = tmp_path / "exit_after_collectives.py"
    script.write_text(EXIT_AFTER_COLLECTIVES)
    for _ in range(3):
        done = torchrun_two(script, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
