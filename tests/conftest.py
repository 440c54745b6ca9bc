"""Shared pytest fixtures. Keep this file generic: corpus fixture trees are built by
``tests/fixtures/trees.py`` (import it as ``from fixtures import trees``)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# emolib's roots point at stand-ins; the session fails if a test wrote into them or into the checkout
pytest_plugins = ["fixtures.hermetic"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The notebooks' end-to-end tests first. make test's pytest-xdist workers take tests in collection
    order, and one worker runs all of test_pipeline_e2e.py (about 3 minutes: its tests share one tiny
    notebook run). Collected last, as the alphabet has it, they ran alone at the end while the others waited."""
    items.sort(key=lambda item: item.path.name != "test_pipeline_e2e.py")  # stable: the rest keep their order


@pytest.fixture
def wait_for_stdout(capsys):
    """``wait_for_stdout(text)``: what this test prints (from any thread) until it contains ``text``;
    fails after 60 s. For a thread blocked on another process's lock, which says so first."""
    def wait(text: str, seconds: float = 60) -> str:
        out, deadline = "", time.monotonic() + seconds
        while text not in out:
            assert time.monotonic() < deadline, f"never printed {text!r}; printed: {out!r}"
            time.sleep(0.01)
            out += capsys.readouterr().out
        return out

    return wait


@pytest.fixture
def fixtures_dir() -> Path:
    """``tests/fixtures``: small data files the tests need (see its README)."""
    return FIXTURES


@pytest.fixture
def make_wav(tmp_path):
    """Write a WAV under ``tmp_path`` and return its path.

    ``make_wav("a.wav", seconds=0.1, sample_rate=16000, channels=1)`` writes low Gaussian
    noise; ``data=`` (frames, or frames x channels) writes exactly those samples;
    ``subtype="FLOAT"`` keeps float samples (NaN included) unquantised.
    """

    def make(name: str = "clip.wav", seconds: float = 0.1, sample_rate: int = 16000, channels: int = 1,
             data: np.ndarray | None = None, subtype: str = "PCM_16", seed: int = 0) -> Path:
        if data is None:
            rng = np.random.default_rng(seed)
            data = rng.normal(0.0, 0.01, size=(round(seconds * sample_rate), channels)).astype(np.float32)
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sample_rate, subtype=subtype, format="WAV")
        return path

    return make


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch):
    """Tests train tiny models: one thread is several times faster than two on shared
    cores (threads would mostly wait for each other). ``train.setup`` reads EMOLIB_THREADS."""
    import torch

    monkeypatch.setenv("EMOLIB_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class EpochKiller:
    """Raises ``KeyboardInterrupt`` in the shared training loop right after epoch ``at`` has
    been logged (and its resume checkpoint written), as a Ctrl-C or a killed job would."""

    def __init__(self, monkeypatch, at: int):
        from emolib import train

        self.calls, self._train, self._real = 0, train, train._report
        self._monkeypatch = monkeypatch

        def killing_report(*args, **kwargs):
            self._real(*args, **kwargs)
            self.calls += 1
            if self.calls == at:
                raise KeyboardInterrupt(f"killed after epoch {at}")

        monkeypatch.setattr(train, "_report", killing_report)

    def disarm(self) -> None:
        self._monkeypatch.setattr(self._train, "_report", self._real)


@pytest.fixture
def kill_after_epoch(monkeypatch):
    """``kill_after_epoch(2)`` arms an :class:`EpochKiller`; ``.disarm()`` lets training run again."""
    return lambda at: EpochKiller(monkeypatch, at)
