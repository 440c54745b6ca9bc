"""The one training loop, shared by both teachers and every student.

Readable top to bottom on purpose (it is what a course on distillation teaches):

    for epoch:
        for batch in shuffled training data:
            loss, terms = loss_fn(model, batch)        # CE for teachers, Eq. 5 for students
            backward, clip gradients, AdamW step, scheduler step
        validation UA on held-out *training* speakers -> keep the best weights
        early stopping after `patience` epochs without improvement
        save the resume state (a killed run continues from here)

Models take a batch (a dict of tensors) and return a dict with at least ``logits``.
AdamW with linear warm-up and linear decay (the BERT fine-tuning schedule, Devlin
et al. 2019); no weight decay on biases and normalisation weights; optional bf16
autocast (GPU servers; it also runs on CPU, which is how it is tested).
"""
from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import CUBLAS_WORKSPACE
from .config import OptimConfig, TrainingConfig
from .machine import env_threads, interrupts_deferred, numerics, numerics_label
from .metrics import unweighted_accuracy, weighted_accuracy
from .progress import mode as progress_mode
from .runs import ResultFileError, Run, atomic_path

LossFn = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


# -- environment ---------------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """The training loss stopped being a finite number: the run is not saved as complete."""


class DeviceError(ValueError):
    """``training.device`` names a device this machine does not have."""


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` (the GPU when there is one), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ..."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"training.device={name!r} is not a device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"training.device={name!r} requested but CUDA is not available on this machine "
                          "(use training.device=auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"training.device={name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type not in ("cpu", "cuda"):  # an Apple or Intel GPU, when this build and machine have one
        backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
        is_available = getattr(backend, "is_available", None)
        if device.type == "meta" or not callable(is_available) or not is_available():
            raise DeviceError(f"training.device={name!r}: this PyTorch build or machine has no {device.type} device "
                              "to train on (use training.device=auto, cpu or cuda)")
    return device


def set_threads(training: TrainingConfig) -> None:
    """torch's CPU threads: ``training.num_threads``, else ``EMOLIB_THREADS``, else ``OMP_NUM_THREADS``
    (which importing emolib sets under a container's CPU quota, ``emolib/__init__.py``; torch reads it
    only when it loads, so a torch imported before emolib had not seen it), else torch's default."""
    threads = training.num_threads or env_threads() or _omp_threads()
    if threads > 0:
        torch.set_num_threads(threads)


def _omp_threads() -> int:
    """``OMP_NUM_THREADS``'s thread count (its first level: "4,2" is 4), or 0 when unset or unreadable."""
    try:
        return max(0, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        return 0


def setup(training: TrainingConfig) -> torch.device:
    """Threads, seeds and determinism for a run; returns the device."""
    set_threads(training)
    seed_everything(training.seed)
    device = resolve_device(training.device)
    if training.deterministic:
        if device.type == "cuda":
            # cuBLAS reads this when it starts, so it must come before the process's first CUDA matmul
            # (importing emolib sets it; here again in case a user removed it since)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)  # warns, not fails, where an op has no such kernel
    if training.precision == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        warnings.warn(f"training.precision=bf16 on {torch.cuda.get_device_name(device)}: GPUs before Ampere (compute "
                      "capability 8.0) emulate bf16, slower than fp32; set training.precision=fp32 there", stacklevel=2)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    """bf16 autocast when asked for (on GPU servers; runs on CPU too), else a no-op."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    return contextlib.nullcontext()


def worker_context(num_workers: int):
    """The start method of DataLoader workers: fork where the platform has it, as the eGeMAPS and
    corpus workers use. The collate functions are closures (``student.make_collate``,
    ``teachers.make_text_collate``), which the default start method of Python 3.14+ on Linux
    (forkserver) and of macOS (spawn) would have to pickle: "Can't pickle local object" at the first
    epoch of any run with ``training.num_workers > 0`` (the ``paper`` preset's 4). None (torch's
    default) without workers or without fork."""
    if num_workers > 0 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


#: Where DataLoader workers hand their batches over (torch's file-descriptor sharing: POSIX shared
#: memory), and how many each keeps ready there (torch's default ``prefetch_factor``).
SHARED_MEMORY = "/dev/shm"
PREFETCH_FACTOR = 2


def shared_memory_workers(num_workers: int, dataset: Dataset, collate: Callable | None, batch_size: int,
                          desc: str) -> int:
    """The DataLoader workers that shared memory can serve, at most ``num_workers``.

    Each worker keeps up to ``PREFETCH_FACTOR`` batches in ``/dev/shm``. A batch that does not fit
    is lost in the worker (it prints "unable to allocate shared memory ... No space left on device"),
    and the training then waits for it for ever. Measured: the ``paper`` preset's 4 workers and
    batches of 128 clips, in a container with Docker's default 64 MB ``/dev/shm``, hung at the first
    batch. A dataset with a ``longest()`` method (the index of the item that pads a batch the
    most: every dataset of emolib's) is sized on the largest batch it can
    make, ``batch_size`` copies of that item, kept by every worker and one more in the training
    process: a corpus whose first batch is short does not hang hours later at its longest clips.
    Any other is measured on one batch of its first items, doubled for batches padded to longer
    clips. Fewer workers are used where they do not fit, and a warning says so."""
    if num_workers <= 0 or len(dataset) == 0:
        return num_workers
    try:
        free = shutil.disk_usage(SHARED_MEMORY).free
    except OSError:  # no /dev/shm (macOS): torch shares memory otherwise there
        return num_workers
    # the items' random draws are seeded by (seed, epoch, item): reading some here moves none of them
    collate = collate or torch.utils.data.default_collate
    size = min(batch_size, len(dataset))
    if callable(getattr(dataset, "longest", None)):
        batch_bytes = _tensor_bytes(collate([dataset[dataset.longest()]] * size))
        room, per_worker = free - batch_bytes, PREFETCH_FACTOR * batch_bytes
    else:
        batch_bytes = _tensor_bytes(collate([dataset[i] for i in range(size)]))
        room, per_worker = free, 2 * PREFETCH_FACTOR * batch_bytes
    fit = min(num_workers, max(0, int(room // per_worker))) if per_worker else num_workers
    if fit < num_workers:
        print(f"warning: {desc}: training.num_workers={num_workers} keeps up to {num_workers * PREFETCH_FACTOR} "
              f"batches of about {batch_bytes / 2**20:,.0f} MiB in {SHARED_MEMORY}, which has "
              f"{free / 2**20:,.0f} MiB free (a container's default is 64 MB: docker run --shm-size 8g, or "
              f"--ipc=host); training with {fit} worker(s) instead", file=sys.stderr, flush=True)
    return fit


def _tensor_bytes(value: Any) -> int:
    """The bytes of every tensor in a batch (nested in dicts, lists and tuples)."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


# -- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Dataset, collate: Callable | None, batch_size: int,
            device: torch.device, precision: str = "fp32", num_workers: int = 0) -> dict[str, np.ndarray]:
    """Every output of the model (logits, embeddings) for ``dataset``, in its order, as float32."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers,
                        pin_memory=device.type == "cuda", multiprocessing_context=worker_context(num_workers))
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, precision):
            out = model(batch)
        for key, value in out.items():
            chunks.setdefault(key, []).append(value.float().cpu().numpy())
        chunks.setdefault("labels", []).append(batch["labels"].cpu().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


# -- the loop -------------------------------------------------------------------------------


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_ua: float | None
    stopped_early: bool = False
    resumed_from: int = 0
    seconds: float = 0.0
    # torch's CPU threads while training: on CPU the result depends on it (the order of float
    # sums in a parallel reduction), so the result files record it
    threads: int = 1


def _param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                  lr_scales: Mapping[str, float] | None = None) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (1-d tensors); a parameter whose name starts
    with a prefix in ``lr_scales`` learns at ``lr`` times that factor (a pre-trained backbone
    fine-tuned more gently than the new heads). The scale stays in the group for the log line."""
    scales = dict(lr_scales or {})
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((f for prefix, f in scales.items() if name.startswith(prefix)), 1.0)
            groups.setdefault((scale, p.ndim > 1), []).append(p)
    order = sorted(groups, key=lambda key: (key[0] != 1.0, not key[1]))  # the base rate first, for the log
    return [{"params": groups[key], "lr": lr * key[0], "lr_scale": key[0],
             "weight_decay": weight_decay if key[1] else 0.0} for key in order]


def make_optimizer(model: torch.nn.Module, optim: OptimConfig,
                   lr_scales: Mapping[str, float] | None = None) -> torch.optim.AdamW:
    """The optimiser every model of the project trains with (see :func:`_param_groups`)."""
    return torch.optim.AdamW(_param_groups(model, optim.weight_decay, optim.lr, lr_scales), lr=optim.lr)


def _schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def _save_weights(model: torch.nn.Module, path, epoch: int, val_ua: float) -> None:
    """The selected weights, with the epoch and validation UA they were selected at (read back on resume)."""
    from safetensors.torch import save_model

    # one metadata key: safetensors writes its metadata map in an order that varies from process to process, so
    # with two keys ("epoch", "val_ua", as runs before 2026-11-26 have them) two identical runs' files differed
    selection = json.dumps({"epoch": epoch, "val_ua": repr(float(val_ua))}, sort_keys=True)
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"selection": selection})


def _saved_selection(path) -> tuple[int, float] | None:
    """(epoch, validation UA) recorded in ``best.safetensors``; None for a file without them."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors' own error types for a damaged header
        raise ResultFileError(f"{path}: damaged ({type(exc).__name__}: {exc}); delete {path.parent} to train "
                              "the run again") from exc
    try:
        if "selection" in meta:
            meta = json.loads(meta["selection"])
        return int(meta["epoch"]), float(meta["val_ua"])
    except (KeyError, ValueError, TypeError):
        return None


def load_weights(model: torch.nn.Module, path) -> None:
    """The weights in ``path`` into ``model``; :class:`ResultFileError` naming the file when they are
    other weights (other names or shapes: a file copied from another run)."""
    from safetensors.torch import load_model

    try:
        load_model(model, str(path), strict=True)
    except RuntimeError as exc:  # torch's "Error(s) in loading state_dict ...: Missing key(s) ..."
        problem = " ".join(str(exc).split())
        raise ResultFileError(f"{path}: holds other weights than this model's ({problem[:300]}); delete "
                              f"{Path(path).parent} to train it again") from exc


def fit(
    model: torch.nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    loss_fn: LossFn,
    optim: OptimConfig,
    training: TrainingConfig,
    collate: Callable | None = None,
    run: Run | None = None,
    desc: str = "model",
    device: torch.device | None = None,
    lr_scales: Mapping[str, float] | None = None,
) -> FitResult:
    """Train ``model`` with early stopping on validation UA; resumable through ``run``.

    The best weights (on the validation speakers) are loaded into ``model`` at the end
    and saved as ``best.safetensors`` in the run folder; ``resume.pt`` holds the state
    after the last finished epoch so that a killed run continues exactly there.
    """
    device = device or resolve_device(training.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: no trainable parameters")
    optimizer = make_optimizer(model, optim, lr_scales)
    steps_per_epoch = math.ceil(len(train_set) / optim.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(optim.epochs * steps_per_epoch,
                                                                       optim.warmup_ratio))
    history: list[dict[str, Any]] = []
    best_ua, best_epoch, start_epoch, resumed_from = -1.0, 0, 1, 0
    seconds_before = 0.0
    best_path = run.path("best.safetensors") if run else None
    best_state: dict[str, torch.Tensor] | None = None

    resume_path = run.path("resume.pt") if run else None
    state = _load_resume_state(resume_path, desc) if resume_path is not None else None
    # how each process that trained this run computed floats (machine.numerics): a run resumed in
    # another mode, or on another kind of CPU, reproduces to the bit nowhere, and its metrics say so
    here = numerics()
    computed_by: list[dict] = list(state.get("numerics_seen", [])) if state is not None else []
    if numerics_label(here) not in {numerics_label(r) for r in computed_by}:
        computed_by.append(here)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_ua, best_epoch = state["history"], state["best_ua"], state["best_epoch"]
        start_epoch = resumed_from = state["epoch"] + 1
        seconds_before = sum(float(row.get("seconds", 0.0)) for row in history)  # the earlier processes' epochs
        _set_rng_states(state, device)
        print(f"{desc}: resuming after epoch {state['epoch']} (best val UA {100 * best_ua:.2f} at epoch {best_epoch})",
              flush=True)
        earlier = [r for r in computed_by if numerics_label(r) != numerics_label(here)]
        if earlier:
            run.earlier_numerics = earlier
            print(f"{desc}: note: epochs before this resume were computed in numerics "
                  f"{'; '.join(numerics_label(r) for r in earlier)}, this process computes in "
                  f"{numerics_label(here)}; the run's metrics.json records both (it will reproduce on neither alone)",
                  flush=True)
        saved = _saved_selection(best_path) if best_path.is_file() else None
        if saved is not None and saved[0] > state["epoch"]:
            # killed after an improving epoch saved its weights but before its resume state: those
            # weights overwrote the earlier best, so they are the selection now; that epoch is redone
            best_epoch, best_ua = saved
            print(f"{desc}: {best_path.name} holds epoch {best_epoch} (val UA {100 * best_ua:.2f}), "
                  f"trained before the interruption; it stays selected unless the redone epochs beat it", flush=True)

    workers = shared_memory_workers(training.num_workers, train_set, collate, optim.batch_size, desc)
    # validation items may be longer (a teacher trains on crops and is validated on whole utterances)
    val_workers = (shared_memory_workers(training.num_workers, val_set, collate, optim.batch_size, f"{desc} validation")
                   if val_set is not None and len(val_set) else 0)
    show = progress_mode(training.progress)
    epochs = range(start_epoch, optim.epochs + 1)
    bar = None
    if show == "bar":
        from tqdm.auto import tqdm

        bar = tqdm(total=optim.epochs, initial=start_epoch - 1, desc=desc, leave=False)
    stopped_early = False
    started = time.perf_counter()
    for epoch in epochs:
        if best_epoch and optim.patience and epoch - best_epoch > optim.patience:
            stopped_early = True
            break
        t0 = time.perf_counter()
        model.train()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)  # e.g. a new random crop per epoch, reproducible on resume
        generator = torch.Generator().manual_seed(training.seed * 100_003 + epoch)
        loader = DataLoader(train_set, batch_size=optim.batch_size, shuffle=True, collate_fn=collate,
                            generator=generator, num_workers=workers, drop_last=False,
                            pin_memory=device.type == "cuda",  # pinned: to_device's copies overlap compute
                            multiprocessing_context=worker_context(workers))
        sums: dict[str, torch.Tensor] = {}
        seen = 0
        for batch in loader:
            batch = to_device(batch, device)
            with autocast(device, training.precision):
                loss, terms = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            optimizer.step()
            scheduler.step()
            n = len(batch["labels"])
            seen += n
            # summed where they are, in float64 as Python floats would be (the same numbers): reading
            # them every step would make the CPU wait for the GPU instead of queueing the next batch
            for name, value in (("loss", loss), *terms.items()):
                term = value.detach().double() * n
                sums[name] = sums[name] + term if name in sums else term
        row: dict[str, Any] = {"epoch": epoch, **{f"train_{k}": float(v) / max(seen, 1) for k, v in sums.items()},
                               "lr": scheduler.get_last_lr()[0] / optimizer.param_groups[0].get("lr_scale", 1.0)}
        if not math.isfinite(row.get("train_loss", 0.0)):  # once NaN, the weights stay NaN: nothing to select or score
            raise TrainingDiverged(
                f"{desc}: the training loss became {row['train_loss']} in epoch {epoch} (terms: "
                + ", ".join(f"{k.removeprefix('train_')} {v:.4g}" for k, v in row.items() if k.startswith("train_"))
                + "); nothing of this run is kept as a result. Lower the learning rate (optim.lr) or the loss "
                "coefficients, or check the inputs for NaN; the epochs before it stay on disk, and a run with "
                "other settings starts afresh")
        if val_set is not None and len(val_set):
            out = predict(model, val_set, collate, optim.batch_size, device, training.precision, val_workers)
            pred = out["logits"].argmax(-1)
            row["val_ua"] = unweighted_accuracy(out["labels"], pred)
            row["val_wa"] = weighted_accuracy(out["labels"], pred)
            improved = row["val_ua"] > best_ua
        else:  # no validation speakers: the last epoch is the selected one
            improved = True
        if improved:
            best_ua, best_epoch = row.get("val_ua", float("nan")), epoch
            if best_path is not None:  # the selection lives on disk, not as a second copy in (GPU) memory
                _save_weights(model, best_path, epoch, best_ua)
            else:
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if run is not None:
            with interrupts_deferred():  # the epoch's two files together: a stopped run lists the epoch it resumes after
                # through a Python file: torch's own writer reports a full disk as "iostream error", Python's
                # write as ENOSPC, which atomic_path turns into one error line naming the file
                with atomic_path(resume_path) as tmp, open(tmp, "wb") as out:
                    torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "history": history, "best_ua": best_ua,
                                "best_epoch": best_epoch, "numerics_seen": computed_by, **_rng_states(device)}, out)
                _write_history(run, history)  # after every epoch: a running run's progress, to plot or list
        _report(desc, row, optim.epochs, improved, show, bar)
    if bar is not None:
        bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    elif best_path is not None and best_path.is_file():  # the selected epoch's weights, saved when it ended
        saved = _saved_selection(best_path)
        if saved is not None and saved[0] != best_epoch:
            raise ResultFileError(f"{best_path}: holds the weights of epoch {saved[0]}, but the run selected epoch "
                                  f"{best_epoch}; delete {best_path.parent} to train it again")
        load_weights(model, best_path)
    elif best_path is not None and best_epoch:  # selected on an earlier start, and deleted since
        raise ResultFileError(f"{best_path}: missing, but the run selected epoch {best_epoch}; delete "
                              f"{best_path.parent} to train it again")
    if run is not None:
        _write_history(run, history)
    selected_ua = best_ua if best_ua >= 0 else None  # None without validation speakers (best_ua is NaN)
    return FitResult(history=history, best_epoch=best_epoch, best_val_ua=selected_ua,
                     stopped_early=stopped_early, resumed_from=resumed_from,
                     seconds=seconds_before + time.perf_counter() - started, threads=torch.get_num_threads())


def _write_history(run: Run, history: list[dict[str, Any]]) -> None:
    import pandas as pd

    run.write_csv("history.csv", pd.DataFrame(history))


def _rng_states(device: torch.device) -> dict[str, Any]:
    """The generators an epoch draws from: torch's on the CPU (shuffling, dropout) and on a GPU,
    and numpy's and Python's global ones (transformers draws SpecAugment's masks of wav2vec 2.0 /
    HuBERT fine-tuning from numpy's)."""
    states: dict[str, Any] = {"rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                              "python_rng": random.getstate()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["rng"])
    if "numpy_rng" in state:  # absent from resume states written before they were saved
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


# Beyond tensors and Python's own types, a resume state holds torch's version string (in numerics_seen)
# and numpy's generator state, a uint32 array: the names that rebuild one, under numpy 2's module name
# and numpy 1's (a state written under either loads).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_RESUME_GLOBALS = [torch.torch_version.TorchVersion, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                   (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
                   (_RECONSTRUCT, "numpy.core.multiarray._reconstruct")]


#: what fit() reads from a resume state (numpy_rng, python_rng and numerics_seen came later: read when there)
_RESUME_KEYS = ("epoch", "model", "optimizer", "scheduler", "history", "best_ua", "best_epoch", "rng")


def _load_resume_state(path, desc: str) -> dict[str, Any] | None:
    """The state saved after the last finished epoch; None when there is none, or when it cannot
    be read (then the run starts again from epoch 1, and says so).

    Read with torch's weights-only unpickler, which builds tensors, Python's own types and the
    numpy names above, and nothing else: a resume.pt put into a shared runs folder (a GPU server's
    EMOLIB_RUNS) cannot run code in the process that resumes from it, as a full pickle could.
    Loaded onto the CPU whatever the training device: the generator states must be CPU byte
    tensors, and ``load_state_dict`` moves the model's and the optimiser's tensors to the
    device of the parameters they are loaded into."""
    if not path.is_file():
        return None
    try:
        with torch.serialization.safe_globals(_RESUME_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (ImportError, MemoryError, OSError):  # not the file's fault (a changed environment, no memory,
        raise  # no permission): the state is kept for a run that can read it
    except Exception as exc:  # a damaged zip archive or pickle: torch raises several types
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = (f"refers to {refused.group(1)}, which no resume state holds: not loaded, as loading it could run "
               "code" if refused else f"is damaged ({type(exc).__name__}: {exc})")
    else:
        missing = [k for k in _RESUME_KEYS if k not in state] if isinstance(state, dict) else None
        if missing == []:
            return state
        why = (f"is not a training state (it holds a {type(state).__name__})" if missing is None else
               f"is not a training state (no {', '.join(missing)})")
    print(f"{desc}: {path} {why}; starting this run again from epoch 1", flush=True)
    path.unlink(missing_ok=True)
    return None


def _report(desc: str, row: dict, epochs: int, improved: bool, show: str, bar) -> None:
    val = f" val UA {100 * row['val_ua']:.2f} WA {100 * row['val_wa']:.2f}" if "val_ua" in row else ""
    if show == "log":
        print(f"{desc} epoch {row['epoch']:>3}/{epochs} loss {row['train_loss']:.4f}{val} "
              f"lr {row['lr']:.2e} ({row['seconds']:.1f} s){' *' if improved else ''}", flush=True)
    elif bar is not None:
        bar.update(1)
        bar.set_postfix_str(f"loss {row['train_loss']:.3f}{val}")
