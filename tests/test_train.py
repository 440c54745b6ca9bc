"""The shared training loop's resume state: damaged files and a kill between two of its writes."""
from __future__ import annotations

import io
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from emolib import train
from emolib.config import OptimConfig, TrainingConfig, get_config
from emolib.runs import ResultFileError, Run


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)

    def forward(self, batch):
        return {"logits": self.layer(batch["x"])}


class Points(torch.utils.data.Dataset):
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def ce(model, batch):
    loss = torch.nn.functional.cross_entropy(model(batch)["logits"], batch["labels"])
    return loss, {"ce": loss}


OPTIM = OptimConfig(lr=0.1, epochs=3, batch_size=4, patience=0, warmup_ratio=0.0)
TRAINING = TrainingConfig(progress="none")


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    return Run("student", get_config("tiny"), fold=1, label="loop").start()


def scripted_ua(monkeypatch, values):
    """Validation UA per evaluation, in order, whatever the model predicts."""
    it = iter(values)
    monkeypatch.setattr(train, "unweighted_accuracy", lambda y, p: next(it))


def test_a_damaged_resume_state_restarts_the_run_and_says_so(run, capsys):
    run.path("resume.pt").write_bytes(b"PK\x03\x04 half a zip archive")
    torch.manual_seed(0)
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    out = capsys.readouterr().out
    assert f"loop: {run.path('resume.pt')} is damaged" in out and "starting this run again from epoch 1" in out
    assert [row["epoch"] for row in result.history] == [1, 2, 3] and result.resumed_from == 0


class Payload:
    """Pickled as a call: Path.touch on the marker. A full unpickler makes that call while it loads."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_resume_state_that_would_run_code_is_not_loaded(run, tmp_path, capsys):
    # a resume.pt planted in a shared runs folder: the weights-only unpickler refuses the call
    marker = tmp_path / "ran"
    torch.save({"epoch": 2, "model": Linear().state_dict(), "payload": Payload(marker)}, run.path("resume.pt"))
    torch.manual_seed(0)
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    out = capsys.readouterr().out
    assert not marker.exists()
    assert (f"loop: {run.path('resume.pt')} refers to getattr, which no resume state holds: not loaded, as loading "
            "it could run code; starting this run again from epoch 1") in out
    assert [row["epoch"] for row in result.history] == [1, 2, 3] and result.resumed_from == 0


def test_a_resume_state_with_numpy_s_generator_loads_under_either_numpy_s_module_name(tmp_path):
    # numpy 2 pickles its arrays as numpy._core.multiarray._reconstruct, numpy 1 as numpy.core...: a state
    # written under either loads (the legacy format keeps the pickle's names as plain bytes to rewrite)
    np.random.seed(7)
    state = {"epoch": 1, "model": {}, "optimizer": {}, "scheduler": {}, "history": [], "best_ua": 0.5, "best_epoch": 1,
             "rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    numpy2 = buffer.getvalue()
    assert numpy2.count(b"numpy._core.multiarray") == 1
    for name, blob in (("numpy2.pt", numpy2), ("numpy1.pt", numpy2.replace(b"numpy._core.", b"numpy.core."))):
        (tmp_path / name).write_bytes(blob)
        loaded = train._load_resume_state(tmp_path / name, "loop")
        assert loaded is not None, name
        assert loaded["numpy_rng"][0] == "MT19937" and loaded["numpy_rng"][1].dtype == np.uint32
        assert np.array_equal(loaded["numpy_rng"][1], state["numpy_rng"][1]) and loaded["python_rng"] == state["python_rng"]


def test_a_kill_between_the_best_weights_and_the_resume_state_keeps_them_selected(run, monkeypatch, capsys):
    # epoch 2 improves (0.5) and saves best.safetensors; the run is killed while saving resume.pt
    scripted_ua(monkeypatch, [0.1, 0.5])
    real_save, calls = torch.save, []

    def save(obj, f, *a, **kw):
        calls.append(obj["epoch"])
        if obj["epoch"] == 2:
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    assert calls == [1, 2] and train._saved_selection(run.path("best.safetensors")) == (2, 0.5)
    assert torch.load(run.path("resume.pt"), weights_only=False)["epoch"] == 1
    epoch2 = load_file(run.path("best.safetensors"))

    # resumed: the redone epoch 2 and epoch 3 are worse than the interrupted epoch 2's 0.5
    monkeypatch.setattr(torch, "save", real_save)
    scripted_ua(monkeypatch, [0.05, 0.04])
    capsys.readouterr()
    model = Linear()
    result = train.fit(model, Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    out = capsys.readouterr().out
    assert "loop: resuming after epoch 1 (best val UA 10.00 at epoch 1)" in out
    assert "best.safetensors holds epoch 2 (val UA 50.00), trained before the interruption" in out
    assert (result.best_epoch, result.best_val_ua, result.resumed_from) == (2, 0.5, 2)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for name, value in model.state_dict().items():
        assert torch.equal(value, epoch2[name]), name


def test_best_weights_of_another_epoch_than_the_selected_one_are_refused(run, monkeypatch):
    scripted_ua(monkeypatch, [0.1, 0.5, 0.4])
    torch.manual_seed(0)
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    # a resume state that says epoch 1 was the best, beside best weights recorded as epoch 2
    state = torch.load(run.path("resume.pt"), weights_only=False)
    state.update(epoch=3, best_epoch=1, best_ua=0.9)
    torch.save(state, run.path("resume.pt"))
    with pytest.raises(ResultFileError, match=r"best\.safetensors: holds the weights of epoch 2, but the run "
                                              r"selected epoch 1; delete .*fold1 to train it again"):
        train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")


def test_without_validation_speakers_the_last_epoch_is_selected_and_no_ua_is_reported(run):
    torch.manual_seed(0)
    result = train.fit(Linear(), Points(), None, ce, OPTIM, TRAINING, run=run, desc="loop")
    assert result.best_epoch == 3 and result.best_val_ua is None
    assert train._saved_selection(run.path("best.safetensors"))[0] == 3


def test_damaged_best_weights_are_named_on_resume(run, monkeypatch):
    scripted_ua(monkeypatch, [0.1, 0.5, 0.4])
    torch.manual_seed(0)
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    run.path("best.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(ResultFileError, match=r"best\.safetensors: damaged .* delete .*fold1 to train the run again"):
        train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")


def test_best_weights_of_another_model_are_named_on_resume(run, monkeypatch):
    # a best.safetensors copied in from another run: readable, but not this model's weights
    scripted_ua(monkeypatch, [0.1, 0.5, 0.4])
    torch.manual_seed(0)
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    save_file({"w": torch.zeros(2)}, run.path("best.safetensors"), metadata={"epoch": "2", "val_ua": "0.5"})
    with pytest.raises(ResultFileError, match=r"best\.safetensors: holds other weights than this model's \(Error\(s\) "
                                              r"in loading state_dict for Linear: .*\); delete .*fold1 to train it again"):
        train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")


@pytest.mark.parametrize("state, why", [({"epoch": 1}, r"is not a training state \(no model, optimizer, scheduler, "
                                                       r"history, best_ua, best_epoch, rng\)"),
                                        ([1, 2], r"is not a training state \(it holds a list\)")])
def test_a_resume_state_of_another_shape_restarts_the_run_and_says_so(run, capsys, state, why):
    # readable by the weights-only unpickler, but not what fit() saves: it failed at every rerun (KeyError: 'model')
    torch.save(state, run.path("resume.pt"))
    torch.manual_seed(0)
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    assert re.search(rf"loop: .*resume\.pt {why}; starting this run again from epoch 1", capsys.readouterr().out)
    assert [row["epoch"] for row in result.history] == [1, 2, 3] and result.resumed_from == 0


def test_the_resume_state_is_read_onto_the_cpu_whatever_the_device(run, monkeypatch):
    # torch.set_rng_state takes a CPU byte tensor only: a state mapped onto the GPU would crash
    # every resumed GPU run; load_state_dict moves model and optimiser tensors to their device
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    asked = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: asked.append(k.get("map_location")) or real_load(*a, **k))
    state = train._load_resume_state(run.path("resume.pt"), "loop")
    assert asked == ["cpu"] and state["rng"].dtype == torch.uint8 and "cuda_rng" not in state
    # a state saved on a GPU carries the GPU's generator; restoring it on a CPU leaves it alone
    state["cuda_rng"] = torch.zeros(3, dtype=torch.uint8)
    train._set_rng_states(state, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state["rng"])


class NumpyNoise(Linear):
    """Draws from numpy's global generator in training, as transformers' SpecAugment masks do."""

    def forward(self, batch):
        out = super().forward(batch)
        if self.training:
            out["logits"] = out["logits"] * torch.from_numpy(np.random.uniform(0.5, 1.5, (1, 2)).astype(np.float32))
        return out


def test_a_resumed_run_continues_numpy_s_random_draws_exactly(tmp_path, monkeypatch):
    def fresh(name):
        monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / name))
        return Run("student", get_config("tiny"), fold=1, label="loop").start()

    def fit(run):
        torch.manual_seed(0)
        return train.fit(NumpyNoise(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")

    np.random.seed(0)
    reference = [row["train_loss"] for row in fit(fresh("whole")).history]

    killed = fresh("killed")
    real_report = train._report

    def report(desc, row, *args):
        real_report(desc, row, *args)
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_report", report)
    np.random.seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(killed)
    monkeypatch.setattr(train, "_report", real_report)
    np.random.seed(123)  # a new process: numpy's generator is wherever it happens to be
    resumed = fit(killed)
    assert resumed.resumed_from == 3
    assert [row["train_loss"] for row in resumed.history] == reference


def test_early_stopping_after_patience_epochs_without_a_better_validation_ua(run, monkeypatch):
    # best at epoch 1; epochs 2 and 3 are the patience (2); epoch 4 is never trained
    scripted_ua(monkeypatch, [0.5, 0.4, 0.3])
    optim = OptimConfig(lr=0.1, epochs=6, batch_size=4, patience=2, warmup_ratio=0.0)
    result = train.fit(Linear(), Points(), Points(), ce, optim, TRAINING, run=run, desc="loop")
    assert result.stopped_early and (result.best_epoch, result.best_val_ua) == (1, 0.5)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert list(run.history()["epoch"]) == [1, 2, 3]


def test_early_stopping_counts_the_epochs_before_an_interruption(run, monkeypatch):
    # killed while saving epoch 3's state: the resumed run redoes epoch 3, then stops as the
    # uninterrupted run above does
    scripted_ua(monkeypatch, [0.5, 0.4, 0.3])
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if obj["epoch"] == 3:
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **kw)

    optim = OptimConfig(lr=0.1, epochs=6, batch_size=4, patience=2, warmup_ratio=0.0)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train.fit(Linear(), Points(), Points(), ce, optim, TRAINING, run=run, desc="loop")
    monkeypatch.setattr(torch, "save", real_save)
    scripted_ua(monkeypatch, [0.3])
    result = train.fit(Linear(), Points(), Points(), ce, optim, TRAINING, run=run, desc="loop")
    assert result.resumed_from == 3 and result.stopped_early and result.best_epoch == 1
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_no_patience_trains_every_epoch(run, monkeypatch):
    scripted_ua(monkeypatch, [0.5, 0.4, 0.3])
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    assert not result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_the_schedule_warms_up_linearly_then_decays_linearly_to_zero():
    # 10 steps, 20 % warmup = 2 steps: factors 1/2, 2/2, then (10 - s) / 8
    factor = train._schedule(10, 0.2)
    assert [factor(s) for s in range(11)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    assert [train._schedule(4, 0.0)(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_the_logged_rate_follows_the_schedule(run):
    # 12 points, batch 4: 3 steps an epoch, 9 in all; warmup round(0.25 * 9) = 2 steps. The rate
    # logged after epoch e is the one after 3e steps: 0.1 * (9 - 3e) / 7, reaching 0 at the end
    optim = OptimConfig(lr=0.1, epochs=3, batch_size=4, patience=0, warmup_ratio=0.25)
    result = train.fit(Linear(), Points(), Points(), ce, optim, TRAINING, run=run, desc="loop")
    assert [row["lr"] for row in result.history] == pytest.approx([0.1 * 6 / 7, 0.1 * 3 / 7, 0.0], abs=1e-12)


def test_a_resume_state_that_this_environment_cannot_read_is_kept(run, monkeypatch):
    # e.g. pickled with a module this environment lacks: not a damaged file, so nothing is deleted
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    run.path("resume.pt").write_bytes(b"a state")

    def unreadable(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'numpy._core'")

    monkeypatch.setattr(torch, "load", unreadable)
    with pytest.raises(ModuleNotFoundError):
        train._load_resume_state(run.path("resume.pt"), "loop")
    assert run.path("resume.pt").read_bytes() == b"a state"


def test_the_selected_epoch_is_restored_with_or_without_a_run_folder(run, monkeypatch):
    # epoch 1 is the best; epoch 2 is worse and patience 1 stops the run there. With a run folder
    # the selection is read back from best.safetensors, without one from a copy in memory (on the CPU)
    optim = OptimConfig(lr=0.1, epochs=3, batch_size=4, patience=1, warmup_ratio=0.0)
    models = {}
    for where in ("disk", "memory"):
        scripted_ua(monkeypatch, [0.5, 0.1])
        torch.manual_seed(0)
        models[where] = Linear()
        result = train.fit(models[where], Points(), Points(), ce, optim, TRAINING,
                           run=run if where == "disk" else None, desc="loop")
        assert (result.best_epoch, len(result.history), result.stopped_early) == (1, 2, True)
    last = torch.load(run.path("resume.pt"), weights_only=False)["model"]  # the state after epoch 2
    for name, value in models["disk"].state_dict().items():
        assert torch.equal(value, models["memory"].state_dict()[name]), name
        assert not torch.equal(value, last[name]), name


@pytest.fixture
def torch_flags():
    """Put back the process-wide flags that setup() sets."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_deterministic_training_is_asked_for_on_every_device(device, torch_flags, monkeypatch):
    """On a GPU too (cuDNN, cuBLAS), so that a resumed run continues exactly there as well. No GPU
    here: setup is told it has one, and only the switches it turns are checked."""
    monkeypatch.setattr(train, "resolve_device", lambda name: torch.device(device))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    assert train.setup(get_config("tiny").training) == torch.device(device)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    on_gpu = device == "cuda"
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (on_gpu, not on_gpu)
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == (":4096:8" if on_gpu else None)

    torch.use_deterministic_algorithms(False)
    train.setup(get_config("tiny", {"training.deterministic": False}).training)
    assert not torch.are_deterministic_algorithms_enabled()


def test_bf16_on_a_gpu_that_only_emulates_it_is_warned_about(torch_flags, monkeypatch):
    monkeypatch.setattr(train, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    bf16 = get_config("tiny", {"training.precision": "bf16"}).training
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.warns(UserWarning, match=r"^training.precision=bf16 on Tesla V100-SXM2-32GB: GPUs before Ampere "):
        train.setup(bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # an A100: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.setup(bf16)


def test_an_epoch_s_loss_is_the_mean_over_utterances_and_its_ua_and_wa_are_the_validation_set_s(run):
    # lr 0: the model does not move, so the epoch's loss is the full training set's mean cross-entropy,
    # however it is cut into batches (12 points in batches of 5: 5, 5 and a last batch of 2)
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    torch.manual_seed(0)
    model, train_set, val_set = Linear(), Points(), Points(7)
    with torch.no_grad():
        ref_loss = torch.nn.functional.cross_entropy(model({"x": train_set.x})["logits"], train_set.y).item()
        val_pred = model({"x": val_set.x})["logits"].argmax(-1).numpy()
    assert len(set(val_set.y.tolist())) == 2 and 0 < accuracy_score(val_set.y, val_pred) < 1  # a non-trivial check
    optim = OptimConfig(lr=0.0, epochs=1, batch_size=5, patience=0, warmup_ratio=0.0)
    result = train.fit(model, train_set, val_set, ce, optim, TRAINING, run=run, desc="loop")
    row = result.history[0]
    assert row["train_loss"] == pytest.approx(ref_loss, rel=1e-6) and row["train_ce"] == pytest.approx(ref_loss, rel=1e-6)
    assert row["val_ua"] == pytest.approx(balanced_accuracy_score(val_set.y, val_pred), abs=1e-12)
    assert row["val_wa"] == pytest.approx(accuracy_score(val_set.y, val_pred), abs=1e-12)
    assert result.best_val_ua == row["val_ua"] and result.best_epoch == 1


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_gradients_are_clipped_to_the_configured_global_norm(run, clip):
    seen = []

    def spy(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    def big(model, batch):  # a loss scaled up so that every unclipped gradient norm is far above 0.5
        loss, terms = ce(model, batch)
        return 1000 * loss, terms

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(spy)
    try:
        torch.manual_seed(0)
        optim = OptimConfig(lr=1e-3, epochs=1, batch_size=4, patience=0, warmup_ratio=0.0, grad_clip=clip)
        train.fit(Linear(), Points(), None, big, optim, TRAINING, run=run, desc="loop")
    finally:
        handle.remove()
    assert len(seen) == 3  # one step per batch
    if clip:
        assert max(seen) == pytest.approx(clip, rel=1e-4)
    else:
        assert min(seen) > 10


def test_the_thread_count_comes_from_the_config_else_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("EMOLIB_THREADS", "2")
    train.set_threads(TrainingConfig(num_threads=1))
    assert torch.get_num_threads() == 1
    train.set_threads(TrainingConfig(num_threads=0))
    assert torch.get_num_threads() == 2
    monkeypatch.delenv("EMOLIB_THREADS")
    train.set_threads(TrainingConfig(num_threads=0))  # neither: torch's count is left alone
    assert torch.get_num_threads() == 2
    # OMP_NUM_THREADS (emolib sets it under a CPU quota) reaches a torch that loaded before it was set
    monkeypatch.setenv("OMP_NUM_THREADS", "1,1")
    train.set_threads(TrainingConfig(num_threads=0))
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "many")  # unreadable: left alone
    torch.set_num_threads(2)
    train.set_threads(TrainingConfig(num_threads=0))
    assert torch.get_num_threads() == 2


class Mebibytes(torch.utils.data.Dataset):
    """Items of 1 MiB each (262,144 float32)."""

    def __init__(self, n=12):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.full((262_144,), float(i)), "labels": torch.tensor(i % 2)}


def _shared_memory_free(monkeypatch, mib):
    from types import SimpleNamespace

    monkeypatch.setattr(train.shutil, "disk_usage",
                        lambda path: SimpleNamespace(free=mib * 2**20) if path == "/dev/shm" else None)


def test_dataloader_workers_are_cut_to_what_shared_memory_holds(monkeypatch, capsys):
    """A worker keeps up to 2 batches in /dev/shm; one that does not fit is lost and the training
    waited for it for ever (the paper preset in a container with Docker's 64 MB: hung at the first
    batch). Batches of 4 MiB here, counted twice for longer ones: 16 MiB a worker."""
    _shared_memory_free(monkeypatch, 40)
    assert train.shared_memory_workers(4, Mebibytes(), None, 4, "student fold 1") == 2
    assert capsys.readouterr().err == (
        "warning: student fold 1: training.num_workers=4 keeps up to 8 batches of about 4 MiB in /dev/shm, which "
        "has 40 MiB free (a container's default is 64 MB: docker run --shm-size 8g, or --ipc=host); training with "
        "2 worker(s) instead\n")
    _shared_memory_free(monkeypatch, 65)  # room for all 4 (a batch is 4 MiB and its 4 labels): nothing said
    assert train.shared_memory_workers(4, Mebibytes(), None, 4, "student fold 1") == 4
    assert capsys.readouterr().err == ""
    _shared_memory_free(monkeypatch, 10)  # not even one: in the training process itself
    assert train.shared_memory_workers(4, Mebibytes(), None, 4, "student fold 1") == 0
    assert "training with 0 worker(s) instead" in capsys.readouterr().err


class Lengths(torch.utils.data.Dataset):
    """Items of ``mib[i]`` MiB, padded in a batch to its longest (as frames and clips are)."""

    def __init__(self, mib, longest=True):
        self.mib = mib
        if longest:
            self.longest = lambda: int(np.argmax(self.mib))

    def __len__(self):
        return len(self.mib)

    def __getitem__(self, i):
        return torch.zeros(int(self.mib[i] * 262_144))


def pad(items):
    out = torch.zeros(len(items), max(len(x) for x in items))
    for i, x in enumerate(items):
        out[i, : len(x)] = x
    return {"x": out}


def test_workers_are_sized_on_the_longest_batch_a_dataset_can_make(monkeypatch, capsys):
    """The first batch of a corpus may be far shorter than its longest: sized on the first, the
    workers would hang at the long clips, hours into the training."""
    mib = [0.25] * 8 + [2.0]  # the first batch of 4: 1 MiB; the longest: 4 copies of 2 MiB, 8 MiB
    _shared_memory_free(monkeypatch, 60)
    # sized on the first items (doubled): 4 MiB a worker, so 4 workers fit, where the longest batches take 64 MiB
    assert train.shared_memory_workers(4, Lengths(mib, longest=False), pad, 4, "student fold 1") == 4
    # sized on the longest: 8 MiB held in training, 16 MiB a worker: (60 - 8) // 16 = 3
    assert train.shared_memory_workers(4, Lengths(mib), pad, 4, "student fold 1") == 3
    assert capsys.readouterr().err == (
        "warning: student fold 1: training.num_workers=4 keeps up to 8 batches of about 8 MiB in /dev/shm, which "
        "has 60 MiB free (a container's default is 64 MB: docker run --shm-size 8g, or --ipc=host); training with "
        "3 worker(s) instead\n")
    _shared_memory_free(monkeypatch, 7)  # not even the training process's own batch
    assert train.shared_memory_workers(4, Lengths(mib), pad, 4, "student fold 1") == 0


def test_emolib_datasets_name_their_longest_item(tmp_path):
    from emolib.student import StudentDataset
    from emolib.teachers import LLDDataset, TextDataset

    maps = [np.zeros((n, 25), np.float32) for n in (30, 90, 60)]
    assert LLDDataset(maps, [0, 1, 2]).longest() == 1
    assert LLDDataset(maps, [0, 1, 2], crop_frames=40).longest() == 1
    tokenizer = lambda texts, **kwargs: {"input_ids": [[101] + [7] * len(t.split()) + [102] for t in texts]}  # noqa: E731
    assert TextDataset(["oh no", "i am so very happy", "fine"], [0, 1, 2], tokenizer, 512).longest() == 1
    frames = {"a": np.zeros((5, 8), np.float16), "b": np.zeros((3, 8), np.float16), "c": np.zeros((9, 8), np.float16)}
    assert StudentDataset(["a", "b", "c"], [0, 1, 2], {"frames": frames, "pooled": {}, "index": 0}, {}, "frames").longest() == 2
    assert StudentDataset(["b", "a"], [0, 1], {"features": frames}, {}, "features").longest() == 1
    assert StudentDataset(["a", "b"], [0, 1], {"pooled": {}}, {}, "pooled").longest() == 0
    import soundfile as sf

    paths = {}
    for uid, seconds in (("a", 0.5), ("b", 1.5), ("c", 1.0)):
        paths[uid] = tmp_path / f"{uid}.wav"
        sf.write(paths[uid], np.zeros(int(seconds * 16000), np.float32), 16000)
    assert StudentDataset(["a", "b", "c"], [0, 1, 2], {}, {}, "waveform", audio_paths=paths).longest() == 1


class PaddedPoints(Points):
    """Points with a padding field of ``mib`` MiB an item, and a ``longest()`` (every item alike)."""

    def __init__(self, mib, n=8):
        super().__init__(n)
        self.mib = mib

    def longest(self):
        return 0

    def __getitem__(self, i):
        return {**super().__getitem__(i), "pad": torch.zeros(int(self.mib * 262_144))}


def test_validation_workers_are_sized_on_the_validation_set(run, monkeypatch, capsys):
    """A teacher trains on crops and is validated on whole utterances: workers sized on the training
    batches would hang at the first validation."""
    _shared_memory_free(monkeypatch, 12)
    made = []
    real = train.DataLoader
    monkeypatch.setattr(train, "DataLoader", lambda *a, **k: made.append(k["num_workers"]) or real(*a, **k))
    collate = torch.utils.data.default_collate
    torch.manual_seed(0)
    # training batches of 1 MiB: (12 - 1) // 2 = 5 workers' room, 2 asked for; validation batches of 16 MiB: none
    train.fit(Linear(), PaddedPoints(0.25), PaddedPoints(4.0), ce, OptimConfig(lr=0.1, epochs=1, batch_size=4),
              TrainingConfig(progress="none", num_workers=2), run=run, desc="loop", collate=collate)
    assert made == [2, 0]
    assert "warning: loop validation: training.num_workers=2 keeps up to 4 batches of about 16 MiB" in capsys.readouterr().err


def test_a_training_whose_workers_do_not_fit_runs_without_them(run, monkeypatch, capsys):
    _shared_memory_free(monkeypatch, 0)
    made = []
    real = train.DataLoader
    monkeypatch.setattr(train, "DataLoader", lambda *a, **k: made.append(k["num_workers"]) or real(*a, **k))
    torch.manual_seed(0)
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TrainingConfig(progress="none", num_workers=2),
                       run=run, desc="loop")
    assert len(result.history) == 3 and made == [0] * 6  # a training and a validation loader an epoch, no workers
    assert "warning: loop: training.num_workers=2 keeps up to 4 batches" in capsys.readouterr().err
    # without workers asked for, the data is not read ahead to size them
    assert train.shared_memory_workers(0, None, None, 4, "loop") == 0


@pytest.mark.parametrize("user_value", [None, ":16:8"])
def test_importing_emolib_sets_cublas_s_workspace_before_any_cuda_work_unless_the_user_did(user_value):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    if user_value:
        env["CUBLAS_WORKSPACE_CONFIG"] = user_value
    out = subprocess.run([sys.executable, "-c", "import os, emolib; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == (user_value or ":4096:8")


def test_selected_weights_deleted_before_a_resume_are_named_not_replaced_by_the_last_epoch_s(run, monkeypatch):
    scripted_ua(monkeypatch, [0.5, 0.1, 0.1])
    torch.manual_seed(0)
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    run.path("best.safetensors").unlink()
    with pytest.raises(ResultFileError, match=r"best\.safetensors: missing, but the run selected epoch 1; "
                                              r"delete .*fold1 to train it again"):
        train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")


def test_dataloader_workers_take_the_closures_we_collate_with_whatever_the_default_start_method():
    # Python 3.14+ starts processes with forkserver on Linux (macOS: spawn), which pickles the collate
    # function: a closure (student.make_collate, teachers.make_text_collate) then fails at the first epoch
    # of any run with training.num_workers > 0, the paper preset's 4
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import multiprocessing, torch
        multiprocessing.set_start_method("forkserver")
        from emolib import train
        from emolib.config import OptimConfig, TrainingConfig
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
        data = [{"x": x[i], "labels": int(x[i, 0] > 0)} for i in range(8)]

        def make_collate():
            def collate(items):  # a closure, as the project's collates are
                return {"x": torch.stack([it["x"] for it in items]), "labels": torch.tensor([it["labels"] for it in items])}
            return collate

        from test_train import Linear, ce  # this module's, from the tests folder on the path

        result = train.fit(Linear(), data, data, ce, OptimConfig(epochs=2, batch_size=4),
                           TrainingConfig(progress="none", num_workers=1), collate=make_collate())
        print("epochs", len(result.history))
    """)
    path = [os.path.dirname(__file__), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("epochs 2")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_while_an_epoch_writes_its_files_waits_until_both_are_written(signame):
    # a run stopped between resume.pt and history.csv was listed one epoch behind the one it resumed after
    import signal

    from emolib.machine import interrupts_deferred

    signum = getattr(signal, signame)

    def as_interrupt(received, frame):  # what the commands install for SIGTERM (Python's own for SIGINT)
        raise KeyboardInterrupt

    previous = signal.signal(signum, as_interrupt)
    try:
        written = []
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                signal.raise_signal(signum)
                written.append("resume.pt")
                written.append("history.csv")
            written.append("the next epoch")  # never: the interrupt arrives as the block ends
        assert written == ["resume.pt", "history.csv"]
        assert signal.getsignal(signum) is as_interrupt  # the handler is back
        with interrupts_deferred():  # nothing received: nothing raised
            written.append("again")
        assert written[-1] == "again"
    finally:
        signal.signal(signum, previous)


def _as_interrupt(received, frame):  # what the commands install for SIGTERM (Python's own for SIGINT)
    raise KeyboardInterrupt


# moment -> (the signal whose handler is being set, to which handler, the other signal sent before or after)
SIGNAL_MOMENTS = {
    # SIGTERM just after SIGINT's deferring handler went in raised before the block, with SIGINT's left deferring
    "going_in": ("SIGINT", "deferring", "after", "SIGTERM"),
    # a second Ctrl-C just after SIGINT's handler was put back raised there, and SIGTERM kept the deferring one
    "put_back_after_setting": ("SIGINT", "previous", "after", "SIGINT"),
    # CPython's signal.signal() runs pending handlers before it changes the handler: a Ctrl-C pending as
    # SIGTERM's is put back raises there, with SIGTERM's still the deferring one
    "put_back_before_setting": ("SIGTERM", "previous", "before", "SIGINT"),
}


@pytest.mark.parametrize("moment", SIGNAL_MOMENTS)
def test_a_signal_arriving_while_the_handlers_change_leaves_neither_replaced(monkeypatch, moment):
    import os
    import signal
    import types

    from emolib import machine

    name, to, when, sent_name = SIGNAL_MOMENTS[moment]
    target, send = getattr(signal, name), getattr(signal, sent_name)
    previous = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _as_interrupt}
    real, sent = signal.signal, []

    def setting(signum, handler):
        due = signum == target and (handler is previous[signum]) == (to == "previous") and not sent
        if due and when == "before":
            sent.append(send)
            os.kill(os.getpid(), send)  # raises here, the handler not yet changed
        old = real(signum, handler)
        if due and when == "after":
            sent.append(send)
            os.kill(os.getpid(), send)  # handled before kill returns: nothing blocks it in this thread
        return old

    fake = types.SimpleNamespace(**{n: getattr(signal, n) for n in dir(signal) if not n.startswith("__")})
    fake.signal = setting
    monkeypatch.setattr(machine, "signal", fake)

    saved = {signum: real(signum, handler) for signum, handler in previous.items()}
    entered = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with machine.interrupts_deferred():
                entered.append(True)
        assert sent == [send] and entered == ([] if moment == "going_in" else [True])
        assert signal.getsignal(signal.SIGTERM) is _as_interrupt
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        for signum, handler in saved.items():
            real(signum, handler)


def test_a_run_resumed_in_other_numerics_records_both(run, monkeypatch, capsys):
    # epoch 1 trained by a process in native numerics on another CPU, killed; resumed here
    other = {"mode": "native", "isa": "AVX512", "cpu": "Other CPU", "vendor": "GenuineIntel", "machine": "x86_64",
             "torch": torch.__version__, "caps": {}}
    here = train.numerics()
    monkeypatch.setattr(train, "numerics", lambda: other)
    train.fit(Linear(), Points(), Points(), ce, OptimConfig(lr=0.1, epochs=1, batch_size=4, warmup_ratio=0.0),
              TRAINING, run=run, desc="loop")
    assert torch.load(run.path("resume.pt"), weights_only=False)["numerics_seen"] == [other]
    monkeypatch.setattr(train, "numerics", lambda: here)
    capsys.readouterr()
    resumed = Run(run.stage, run.cfg, fold=run.fold, label="loop")
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=resumed, desc="loop")
    assert result.resumed_from == 2
    out = capsys.readouterr().out
    assert ("loop: note: epochs before this resume were computed in numerics native AVX512 on Other CPU, this "
            f"process computes in {train.numerics_label(here)}") in out
    resumed.finish({"ua": 0.5})
    metrics = resumed.metrics()
    assert metrics["numerics"]["mode"] == here["mode"] and metrics["numerics_earlier"] == [other]


def test_a_run_resumed_in_the_same_numerics_records_one(run):
    train.fit(Linear(), Points(), Points(), ce, OptimConfig(lr=0.1, epochs=1, batch_size=4, warmup_ratio=0.0),
              TRAINING, run=run, desc="loop")
    resumed = Run(run.stage, run.cfg, fold=run.fold, label="loop")
    train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=resumed, desc="loop")
    assert torch.load(resumed.path("resume.pt"), weights_only=False)["numerics_seen"] == [train.numerics()]
    resumed.finish({"ua": 0.5})
    assert "numerics_earlier" not in resumed.metrics()


def test_a_loss_that_becomes_nan_stops_the_run_instead_of_scoring_nan_weights(run):
    """A learning rate far too high (or a loss weight of inf) made every epoch's loss NaN, and the
    run was saved as complete with chance predictions and averaged into the tables."""
    def exploding(model, batch):  # finite in epoch 1, NaN from the second epoch's first step on
        loss, terms = ce(model, batch)
        if exploding.steps >= 3:
            loss = loss * float("nan")
        exploding.steps += 1
        return loss, {**terms, "kd": loss.detach()}

    exploding.steps = 0
    with pytest.raises(train.TrainingDiverged, match=r"^loop: the training loss became nan in epoch 2 \(terms: loss nan"):
        train.fit(Linear(), Points(), Points(), exploding, OPTIM, TRAINING, run=run, desc="loop")
    assert not run.is_complete() and not (run.dir / "metrics.json").exists()
    assert len((run.dir / "history.csv").read_text().splitlines()) == 2  # the header and epoch 1, which is kept


def test_a_resumed_run_counts_the_training_time_of_every_process(run, monkeypatch):
    # a run killed just before its result files said "best epoch 7 of 120, 0.0 s": only the last process counted
    def clock(step):  # a reading `step` seconds after the last
        ticks = iter(range(100_000))
        return lambda: step * next(ticks)

    monkeypatch.setattr(train.time, "perf_counter", clock(100.0))  # the first process: slow epochs
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if obj["epoch"] == 3:
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(train.time, "perf_counter", clock(0.001))  # the resumed one: a fast last epoch
    result = train.fit(Linear(), Points(), Points(), ce, OPTIM, TRAINING, run=run, desc="loop")
    assert result.resumed_from == 3 and [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.seconds >= sum(row["seconds"] for row in result.history) >= 200


SAVE_SELECTED = """
import sys, torch
from emolib import train
torch.manual_seed(0)
train._save_weights(torch.nn.Linear(3, 2), sys.argv[1], 7, 0.625)
"""


def test_the_selected_weights_are_the_same_bytes_in_every_process(tmp_path):
    # safetensors writes its metadata map in an order that varies per process: with two keys, two identical runs'
    # best.safetensors differed in about half the pairs, and a checksum comparison of runs failed
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import save_model

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    files = [tmp_path / f"best{k}.safetensors" for k in range(4)]
    for f in files:
        subprocess.run([sys.executable, "-c", SAVE_SELECTED, str(f)], check=True, env=env)
    assert len({f.read_bytes() for f in files}) == 1
    assert train._saved_selection(files[0]) == (7, 0.625)
    old = tmp_path / "old.safetensors"  # as runs before this change wrote it: still read
    save_model(torch.nn.Linear(3, 2), str(old), metadata={"epoch": "3", "val_ua": "0.5"})
    assert train._saved_selection(old) == (3, 0.5)
