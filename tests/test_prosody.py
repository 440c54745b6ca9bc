"""eGeMAPS descriptors: shapes, the documented treatment of silent / short / NaN input, normalisation."""
import numpy as np
import pytest
import soundfile as sf

from emolib import prosody


def test_lld_and_functionals_shapes(tmp_path):
    t = np.arange(16000) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16000)
    lld = prosody.extract(path, "lld")
    assert lld.shape[1] == 25 and 95 <= lld.shape[0] <= 100  # 10 ms hop over 1 s
    functionals = prosody.extract(path, "functionals")
    assert functionals.shape == (88,)
    # a steady 150 Hz tone is voiced throughout, at 12 log2(150 / 27.5) = 29.37 semitones above 27.5 Hz
    f0 = lld[:, prosody.LLD_NAMES.index("F0semitoneFrom27.5Hz_sma3nz")]
    semitones = 12 * np.log2(150 / 27.5)
    assert (f0 > 0).mean() > 0.9 and np.median(f0) == pytest.approx(semitones, abs=0.5)
    # the functionals' first two are that F0's mean and its normalised deviation (about 0 for a steady tone)
    assert functionals[0] == pytest.approx(semitones, abs=0.5) and abs(functionals[1]) < 0.01


def test_silent_and_too_short_audio_are_kept_and_counted(tmp_path):
    silent, short = tmp_path / "silent.wav", tmp_path / "short.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    sf.write(short, (0.1 * np.random.default_rng(0).normal(size=400)).astype(np.float32), 16000)  # 25 ms
    arrays = {"silent": prosody.extract(silent), "short": prosody.extract(short)}
    assert arrays["short"].shape[0] < prosody.MIN_FRAMES
    norm = prosody.Normaliser(np.zeros(25, np.float32), np.ones(25, np.float32))
    ready, counts = prosody.prepare_lld(arrays, norm)
    assert counts == {"nan_frames_replaced": 1, "short_utterances_padded": 1, "silent_utterances": 1, "utterances": 2}
    assert all(x.shape[0] >= prosody.MIN_FRAMES and np.isfinite(x).all() for x in ready.values())


def test_normaliser_uses_given_arrays_only_and_repairs_nan():
    a = np.array([[1.0, 5.0], [3.0, 5.0]], np.float32)
    b = np.array([[5.0, 5.0]], np.float32)
    norm = prosody.Normaliser.fit([a, b])
    np.testing.assert_allclose(norm.mean, [3.0, 5.0])
    np.testing.assert_allclose(norm.std, [np.std([1, 3, 5]), 1.0])  # a constant descriptor keeps std 1
    x = np.array([[3.0, np.nan], [np.inf, 5.0]], np.float32)
    ready, counts = prosody.prepare_lld({"x": x[:, :2]}, norm)
    assert counts["nan_frames_replaced"] == 2
    np.testing.assert_allclose(ready["x"][:2], [[0.0, 0.0], [0.0, 0.0]])
    # finite values are standardised with the fitted statistics: (x - mean) / std
    ready, counts = prosody.prepare_lld({"y": np.array([[5.0, 7.0], [1.0, np.nan]], np.float32)}, norm)
    assert counts["nan_frames_replaced"] == 1
    np.testing.assert_allclose(ready["y"][:2], [[2.0 / np.std([1, 3, 5]), 2.0], [-2.0 / np.std([1, 3, 5]), 0.0]],
                               rtol=1e-6)


def test_an_infinite_training_frame_does_not_take_its_descriptor_s_statistics():
    # column 0: finite values 1, 3, 5 and one inf (a clipped frame); column 1: -inf and 2, 4
    a = np.array([[1.0, -np.inf], [3.0, 2.0]], np.float32)
    b = np.array([[np.inf, 4.0], [5.0, 4.0]], np.float32)
    norm = prosody.Normaliser.fit([a, b])
    np.testing.assert_allclose(norm.mean, [3.0, 10 / 3], rtol=1e-6)
    np.testing.assert_allclose(norm.std, [np.std([1, 3, 5]), np.std([2, 4, 4])], rtol=1e-6)
    ready, counts = prosody.prepare_lld({"a": a}, norm)
    assert counts["nan_frames_replaced"] == 1  # the inf itself becomes the mean, 0
    np.testing.assert_allclose(ready["a"][:2], [[-2.0 / np.std([1, 3, 5]), 0.0],
                                                [0.0, (2 - 10 / 3) / np.std([2, 4, 4])]], rtol=1e-6)


def test_unknown_level_is_an_error(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, np.full(1600, 0.1, np.float32), 16000)
    with pytest.raises(KeyError):
        prosody.extract(path, "frames")


def test_voiced_only_descriptors_are_normalised_over_voiced_frames():
    # column 0: loudness-like, always defined; column 1: F0-like, 0 = unvoiced
    a = np.array([[1.0, 0.0], [3.0, 30.0], [5.0, 34.0], [7.0, 0.0]], np.float32)
    norm = prosody.Normaliser.fit([a], voiced_only=np.array([False, True]))
    np.testing.assert_allclose(norm.mean, [4.0, 32.0])
    np.testing.assert_allclose(norm.std, [np.std([1, 3, 5, 7]), 2.0])
    z = norm(a)
    np.testing.assert_allclose(z[:, 1], [0.0, -1.0, 1.0, 0.0])  # unvoiced -> the voiced mean
    assert prosody.VOICED_ONLY.sum() == 15 and prosody.LLD_NAMES[10].startswith("F0semitone")


def test_speaker_normalisation_takes_each_speaker_to_its_own_mean():
    # 25 descriptors; speaker "lo" sits 10 below speaker "hi" on every one, with the same spread
    rng = np.random.default_rng(0)
    hi = [rng.normal(size=(50, 25)).astype(np.float32) + 40 for _ in range(2)]
    arrays = {"u0": hi[0] - 10, "u1": hi[1] - 10, "u2": hi[0], "u3": hi[1]}  # the same turns, 10 lower
    speaker_of = {"u0": "lo", "u1": "lo", "u2": "hi", "u3": "hi"}
    per_utt = prosody.speaker_normalisers(arrays, speaker_of)
    assert per_utt["u0"] is per_utt["u1"] and per_utt["u2"] is per_utt["u3"] and per_utt["u0"] is not per_utt["u2"]
    # each speaker's statistics are those of all of that speaker's frames (voiced-only columns over non-zero ones)
    lo = np.concatenate([arrays["u0"], arrays["u1"]]).astype(np.float64)
    np.testing.assert_allclose(per_utt["u0"].mean, lo.mean(0), rtol=1e-5)
    np.testing.assert_allclose(per_utt["u0"].std, lo.std(0), rtol=1e-4)
    ready, _ = prosody.prepare_lld(arrays, per_utt)
    for uids in (("u0", "u1"), ("u2", "u3")):
        frames = np.concatenate([ready[u] for u in uids])
        np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(frames.std(0), 1.0, rtol=1e-4)
    # the 10-unit offset between the voices is gone: the same turn reads the same from either speaker
    np.testing.assert_allclose(ready["u0"], ready["u2"], atol=1e-4)
    # one fold-wide normaliser keeps it: 10 units over a pooled std of sqrt(1 + 5 ** 2)
    pooled, _ = prosody.prepare_lld(arrays, prosody.Normaliser.fit(list(arrays.values())))
    np.testing.assert_allclose((pooled["u2"] - pooled["u0"]).mean(), 10 / np.sqrt(1 + 25), rtol=0.02)


NON_ASCII_SITE = """
import sys
import numpy as np, opensmile
from emolib import prosody

assert "dür" in opensmile.__file__, opensmile.__file__
audio, out = sys.argv[1:]
np.savez(out, lld=prosody.extract(audio, "lld"), functionals=prosody.extract(audio, "functionals"))
"""


def test_opensmile_installed_under_a_non_ascii_folder_gives_the_same_descriptors(tmp_path):
    """openSMILE's binding encodes the paths of its config files (in site-packages) as ASCII: with
    the checkout and its .venv under a folder such as /home/jürgen, every extraction failed with
    UnicodeEncodeError, so did make report and 50 tests. The package, copied under such a folder
    and imported from there, must give what it gives here, for an audio file named alike."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import opensmile

    site = tmp_path / "dür"
    shutil.copytree(Path(opensmile.__file__).parent, site / "opensmile")
    audio, out = tmp_path / "größe.wav", tmp_path / "out.npz"
    t = np.arange(24000) / 16000
    sf.write(audio, (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    repo = Path(prosody.__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(repo), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", NON_ASCII_SITE, str(audio), str(out)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    there = np.load(out)
    assert there["lld"].shape == (146, 25)  # 1.5 s at a 10 ms hop, less the windows that do not fit
    np.testing.assert_array_equal(there["lld"], prosody.extract(audio, "lld"))
    np.testing.assert_array_equal(there["functionals"], prosody.extract(audio, "functionals"))


WORKER_KILLED = """
import os, signal, sys
import numpy as np, soundfile as sf
from emolib import machine, prosody

folder = sys.argv[1]
items = []
for k in range(8):
    path = os.path.join(folder, f"clip{k}.wav")
    sf.write(path, np.random.default_rng(k).normal(0, 0.1, 8000 + 800 * k).astype(np.float32), 16000)
    items.append((f"u{k}", path))
real, parent = prosody.extract, os.getpid()

def dying(path, *args):  # the worker handed clip3 is killed, as by the out-of-memory killer
    if path.endswith("clip3.wav") and os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, *args)

prosody.extract = dying
try:
    prosody.features(items, "lld", processes=2, progress=False)
    print("no error")
except machine.WorkerDied as err:
    print("error:", err)
prosody.extract = real
again = prosody.features(items, "lld", processes=2, progress=False)  # the next run does the rest
print("resumed", all(np.array_equal(again[u], real(p, "lld")) for u, p in items))
"""


def test_a_killed_extraction_worker_is_an_error_not_a_hang_and_the_next_run_finishes(tmp_path):
    """multiprocessing.Pool replaces a worker that dies and waits for ever for the files it held:
    one worker killed (the OOM killer) or crashed in openSMILE hung the command, and every process
    waiting on the cache's lock behind it. The subprocess's timeout only stops a hang."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "EMOLIB_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", WORKER_KILLED, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"error: eGeMAPS lld into {tmp_path / 'cache'}: a worker process ended abruptly"), lines
    assert "run the command again to do the rest" in lines[0]
    assert lines[1] == "resumed True"


def test_what_a_killed_extraction_was_writing_is_removed_when_the_next_one_starts(tmp_path, monkeypatch):
    """SIGKILL runs no cleanup: the temporary file of the entry being written stayed in the cache
    for good (a frame-level backbone entry is megabytes). The next extraction into the cache, under
    its lock, removes it, and writes the missing entry."""
    from emolib.cache import FeatureCache

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    items = []
    for k in range(2):
        path = tmp_path / f"clip{k}.wav"
        sf.write(path, np.random.default_rng(k).normal(0, 0.1, 8000).astype(np.float32), 16000)
        items.append((f"u{k}", path))
    first = prosody.features(items, "lld", processes=1, progress=False)
    cache = FeatureCache("egemaps", prosody._settings("lld", None))
    entry = next(cache.dir.glob("*/*.npy"))
    half = entry.read_bytes()[:100]
    entry.unlink()  # killed while writing it: its temporary file is there, the entry is not
    leftover = entry.with_name(f".{entry.name}.k1ll3d.npy")
    leftover.write_bytes(half)
    again = prosody.features(items, "lld", processes=1, progress=False)
    assert not leftover.exists() and entry.is_file()
    assert sorted(p.name for p in cache.dir.rglob("*") if p.is_file()) == sorted(
        [".lock", "settings.json", *(p.name for p in cache.dir.glob("*/*.npy"))])
    assert all(np.array_equal(first[u], again[u]) for u, _ in items)


@pytest.mark.parametrize("level, wrong", [("lld", np.zeros((3,), np.float32)), ("lld", np.zeros((50, 24), np.float32)),
                                          ("lld", np.zeros((50, 25), np.float64)),
                                          ("functionals", np.zeros((87,), np.float32))])
def test_a_cache_entry_of_the_wrong_shape_or_dtype_is_extracted_again(tmp_path, monkeypatch, level, wrong):
    """A valid .npy of another array over an entry (a bad copy, a hand edit) was read as whole."""
    from emolib.cache import FeatureCache
    from emolib.runs import ResultFileError

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "clip.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    first = prosody.features([("u", path)], level, processes=1, progress=False)["u"]
    entry = next(FeatureCache("egemaps", prosody._settings(level, None)).dir.glob("*/*.npy"))
    np.save(entry, wrong)
    read = prosody.features([("u", path)], level, processes=1, progress=False)  # it is computed again
    assert np.array_equal(read["u"], first)
    np.save(entry, wrong)  # written over after it was looked at: named when read
    with pytest.raises(ResultFileError, match=rf"^{entry}: damaged cache entry \(holds a {wrong.dtype} array of shape "):
        read["u"]


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test's duration. A process started in the background by
    a shell without job control (``make test &`` in a script) inherits SIGINT ignored, and Python
    then installs no handler: a Ctrl-C does nothing there, rightly, and emolib leaves it so."""
    import signal

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)


@pytest.mark.parametrize("level", ["lld", "functionals"])
def test_ctrl_c_inside_opensmile_is_raised_after_the_file_and_nothing_partial_is_cached(tmp_path, monkeypatch, level,
                                                                                       python_sigint):
    """openSMILE hands its frames to Python through a ctypes callback, and an exception raised there
    is printed and dropped: a Ctrl-C (or the SIGTERM the commands turn into one) that landed in it was
    lost, and so were the callback's frames. The file's LLDs came back one frame short, its
    functionals all NaN, and both went into the cache as whole (found by Ctrl-C on `make report`
    during the eGeMAPS step: two NaN functionals). Here the signal arrives inside the callback,
    on its third frame (functionals: their only one); the extraction must end with the
    KeyboardInterrupt and leave the cache without the file."""
    import signal

    from opensmile.core.lib import OpenSMILE

    from emolib.cache import FeatureCache

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "clip.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    whole = prosody.extract(path, level)
    real, frames = OpenSMILE.external_sink_set_callback_ex, []

    def set_callback(self, component, callback):
        def interrupted_on_the_third(data, meta):
            frames.append(len(data))
            if len(frames) == (3 if level == "lld" else 1):
                signal.raise_signal(signal.SIGINT)  # Python's handler runs here, inside the callback
            callback(data, meta)
        return real(self, component, interrupted_on_the_third)

    prosody._SMILE.pop(level, None)  # a new Smile object, so that it takes the callback below
    try:
        with monkeypatch.context() as patched:  # undone before the second extraction; EMOLIB_CACHE stays
            patched.setattr(OpenSMILE, "external_sink_set_callback_ex", set_callback)
            with pytest.raises(KeyboardInterrupt):
                prosody.features([("u", path)], level, processes=1, progress=False)
        assert len(frames) == (whole.shape[0] if level == "lld" else 1)  # the whole file first, then the Ctrl-C
        cache = FeatureCache("egemaps", prosody._settings(level, None))
        assert cache.dir.parent.parent == tmp_path / "cache" and not list(cache.dir.glob("*/*.npy"))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
        prosody._SMILE.pop(level, None)
        again = prosody.features([("u", path)], level, processes=1, progress=False)
        np.testing.assert_array_equal(again["u"], whole)
        assert len(list(cache.dir.glob("*/*.npy"))) == 1  # into the test's cache, not the checkout's
    finally:
        prosody._SMILE.pop(level, None)


def _voiced_like(rng, frames):
    """LLD-shaped frames with what real ones have: unvoiced zeros in the voiced-only columns, a NaN, an inf."""
    x = rng.normal(loc=3.0, size=(frames, 25)).astype(np.float32)
    x[np.ix_(rng.random(frames) < 0.3, prosody.VOICED_ONLY)] = 0.0
    x[0, rng.integers(25)] = np.nan
    x[-1, rng.integers(25)] = np.inf
    return x


@pytest.mark.parametrize("voiced_only", [None, prosody.VOICED_ONLY])
def test_normaliser_statistics_are_nanmean_and_nanstd_over_every_valid_frame(voiced_only):
    # the two-pass sums must give what stacking every frame and asking numpy gives
    rng = np.random.default_rng(3)
    arrays = [_voiced_like(rng, n) for n in (1, 7, 50, 300)]
    stacked = np.concatenate(arrays).astype(np.float64)
    stacked[~np.isfinite(stacked)] = np.nan
    if voiced_only is not None:
        stacked[:, voiced_only] = np.where(stacked[:, voiced_only] == 0, np.nan, stacked[:, voiced_only])
    norm = prosody.Normaliser.fit(arrays, voiced_only)
    np.testing.assert_allclose(norm.mean, np.nanmean(stacked, 0), rtol=1e-6)
    np.testing.assert_allclose(norm.std, np.nanstd(stacked, 0), rtol=1e-6)


def test_a_descriptor_never_valid_keeps_mean_0_and_std_1():
    x = np.array([[1.0, 0.0], [2.0, 0.0]], np.float32)  # column 1: voiced-only and never voiced
    norm = prosody.Normaliser.fit([x], voiced_only=np.array([False, True]))
    np.testing.assert_array_equal(norm.mean, [1.5, 0.0])
    np.testing.assert_array_equal(norm.std, [0.5, 1.0])


def _cached_corpus(tmp_path, monkeypatch, n, frames):
    """``n`` utterances whose LLDs sit in the cache already (features() then extracts nothing)."""
    from emolib.cache import FeatureCache, file_digest

    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    cache = FeatureCache("egemaps", prosody._settings("lld", None))
    rng, items = np.random.default_rng(0), []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        path.write_bytes(f"clip {i}".encode())  # never read as audio: its digest finds the entry
        cache.put(file_digest(path), _voiced_like(rng, frames))
        items.append((f"u{i}", path))
    return items


def test_features_are_read_from_disk_when_asked_for_and_never_held_together(tmp_path, monkeypatch):
    # 300 utterances of 1,000 frames (30 MB of descriptors): fitting the normaliser, counting the
    # repairs and reading every training map once must hold only a few utterances at a time
    import tracemalloc

    from emolib.teachers import LLDDataset

    items = _cached_corpus(tmp_path, monkeypatch, 300, 1000)
    tracemalloc.start()
    try:
        feats = prosody.features(items, "lld", progress=False)
        ids = [uid for uid, _ in items]
        norm = prosody.Normaliser.fit(prosody.Selection(feats, ids[:200]), voiced_only=prosody.VOICED_ONLY)
        ready, counts = prosody.prepare_lld(feats, norm, hold=False)
        dataset = LLDDataset(prosody.Selection(ready, ids), [0] * len(ids), crop_frames=300)
        for i in range(len(dataset)):
            dataset[i]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts["utterances"] == 300 and counts["nan_frames_replaced"] == 600  # a NaN frame and an inf frame in each
    assert peak < 3e6, f"{peak / 1e6:.1f} MB held at once, of 30 MB of descriptors"
    # what is read on demand is what an eager list would hold
    eager = prosody.Normaliser.fit([feats[i] for i in ids[:200]], voiced_only=prosody.VOICED_ONLY)
    np.testing.assert_array_equal(norm.mean, eager.mean)
    np.testing.assert_array_equal(norm.std, eager.std)
    np.testing.assert_array_equal(ready["u7"], prosody.prepare_one(feats["u7"], norm)[0])
    assert prosody.Selection(ready, ids)[1:3].ids == ["u1", "u2"] and len(prosody.Selection(ready, ids)) == 300


def test_ready_maps_are_held_up_to_a_size_and_computed_when_read_beyond_it(tmp_path, monkeypatch):
    items = _cached_corpus(tmp_path, monkeypatch, 5, 40)
    feats = prosody.features(items, "lld", progress=False)
    assert feats.nbytes() == 5 * (40 * 25 * 4 + 128)  # each entry: the data and a 128-byte .npy header
    norm = prosody.Normaliser.fit(list(feats.values()), voiced_only=prosody.VOICED_ONLY)
    held, held_counts = prosody.prepare_lld(feats, norm)
    assert isinstance(held, dict)  # 20 KB: far below cache.HOLD_BYTES
    import emolib.cache

    monkeypatch.setattr(emolib.cache, "HOLD_BYTES", feats.nbytes() - 1)
    computed, counts = prosody.prepare_lld(feats, norm)
    assert isinstance(computed, prosody.PreparedLLD) and counts == held_counts
    assert list(computed) == list(held) == [uid for uid, _ in items]
    for uid in held:
        np.testing.assert_array_equal(computed[uid], held[uid])
