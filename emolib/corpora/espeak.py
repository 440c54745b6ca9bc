"""A ctypes driver for the espeak-ng speech synthesiser: the voice of the built-in corpus.

The built-in corpus (:mod:`emolib.corpora.synth`) stands in for IEMOCAP, which cannot be
downloaded here; espeak-ng is the one synthesiser that installs from pip alone (the
``espeakng-loader`` wheel ships ``libespeak-ng.so`` 1.52 and its voice data) and controls
pitch level, pitch range, rate and loudness, the four prosodic cues of the corpus.

Licence: espeak-ng is GPL-3.0. This module only *calls* the library at run time (``dlopen``
through ctypes, the functions of its public header ``speak_lib.h``); it contains none of
espeak-ng's code or data.

Two facts about the library shape this driver (both measured, see docs/ENVIRONMENT.md):

- espeak-ng keeps synthesis state in C statics (pitch-flutter phase, automatic gain
  control, echo buffer, ...) that no API call resets, not even ``espeak_Terminate`` +
  ``espeak_Initialize`` or ``espeak_ng_SetRandSeed``: the same request gives different
  samples depending on what was synthesised before it in the process. A corpus whose
  files must be byte-identical whatever order they are made in (resume after a kill,
  one or two processes) therefore runs every synthesis in a child process forked from a
  process that never synthesises itself: each child starts from the same state. This
  costs about 10 ms per call (fork + loading the English dictionary), against about 3 ms
  for the synthesis of a 3-second sentence.
- Voices with breathiness (f2, f3, f5, ...) add noise drawn from the C library's
  ``rand()``, whose state is the process's, not espeak-ng's; so is espeak-ng's own random
  generator. The child seeds both from the caller's ``seed`` before synthesising.
- ``espeak_SetVoiceByName`` returns success for a voice variant that does not exist (it
  silently keeps the default voice), so names are checked against the data folder here.
"""
from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..machine import interrupts_deferred

#: espeak-ng's native output rate; checked against what ``espeak_Initialize`` returns.
SAMPLE_RATE = 22050

# speak_lib.h constants (public API of espeak-ng 1.52)
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # synthesis returns when done; samples go to the callback
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """The library could not be loaded, initialised or made to speak."""


class VoiceError(ValueError):
    """A voice name (accent or variant) that the bundled espeak-ng data does not have."""


@dataclass(frozen=True)
class Prosody:
    """espeak-ng's four prosodic controls, in the library's own units."""

    rate: int = 175  # words per minute; espeak-ng's default 175, accepted 80..450
    pitch: int = 50  # base pitch 0..99 on a log scale (50 = the variant's own; +50 = one octave up)
    range: int = 50  # pitch range 0..99 (50 = the variant's own; 0 = monotone)
    volume: int = 100  # amplitude 0..200 (100 = default; louder is limited by espeak's own gain control)

    def __post_init__(self) -> None:
        for name, low, high in (("rate", 80, 450), ("pitch", 0, 99), ("range", 0, 99), ("volume", 0, 200)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ValueError(f"espeak-ng {name} must be an integer in {low}..{high}, got {value!r}")


# -- the data folder: which voices exist ----------------------------------------------------


def data_path() -> Path:
    """The ``espeak-ng-data`` folder shipped inside the ``espeakng-loader`` wheel."""
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


@lru_cache(maxsize=1)
def variants() -> tuple[str, ...]:
    """Voice variants (``m1``..``m8``, ``f1``..``f5``, ``klatt``, ...): the files of ``voices/!v``."""
    folder = data_path() / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


@lru_cache(maxsize=1)
def languages() -> tuple[str, ...]:
    """Language (accent) voices, lower-cased file names under ``lang/`` (``en-us``, ``en-gb-x-rp``,
    ``en-029``, ...). ``espeak_SetVoiceByName`` finds a voice by this file name."""
    folder = data_path() / "lang"
    return tuple(sorted({p.name.lower() for p in folder.rglob("*") if p.is_file()}))


def voice_name(language: str, variant: str | None = None) -> str:
    """``("en-us", "f2")`` -> ``"en-us+f2"``, after checking both against the data folder
    (espeak-ng itself accepts unknown variants silently). Without a variant: the
    language voice alone."""
    if language.lower() not in languages():
        english = [n for n in languages() if n.startswith("en")]
        raise VoiceError(
            f"espeak-ng has no language voice {language!r} in {data_path() / 'lang'}; "
            f"English ones: {', '.join(english)}"
        )
    if variant is not None and variant not in variants():
        raise VoiceError(
            f"espeak-ng has no voice variant {variant!r} in {data_path() / 'voices' / '!v'}; "
            f"variants: {', '.join(variants())}"
        )
    return f"{language.lower()}+{variant}" if variant is not None else language.lower()


# -- the library --------------------------------------------------------------------------

_LIB: ctypes.CDLL | None = None
_chunks: list[bytes] = []


def _collect(wav, numsamples, events) -> int:
    """The synthesis callback: espeak-ng hands over 16-bit samples in pieces."""
    if numsamples > 0:
        _chunks.append(ctypes.string_at(wav, numsamples * 2))
    return 0  # 0 = continue


# A module-level reference: ctypes frees a callback object that Python no longer holds,
# while espeak-ng would still call it.
_CALLBACK = _SYNTH_CALLBACK(_collect)


def _library() -> ctypes.CDLL:
    """Load and initialise espeak-ng once per process. Initialising does not synthesise,
    so the process stays a clean parent for the forked children of :func:`synthesize`."""
    global _LIB
    if _LIB is not None:
        return _LIB
    import espeakng_loader

    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as err:
        raise EspeakError(f"cannot load espeak-ng from {espeakng_loader.get_library_path()}: {err}") from err
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path()).encode(), 0)
    if rate != SAMPLE_RATE:
        raise EspeakError(f"espeak_Initialize with data {data_path()} returned {rate}, expected {SAMPLE_RATE} Hz")
    lib.espeak_SetSynthCallback(_CALLBACK)
    _LIB = lib
    return lib


def library_version() -> str:
    """The espeak-ng version string (``"1.52.0"``); part of the built-in corpus's identity."""
    return _library().espeak_Info(None).decode()


def _synthesize_here(lib: ctypes.CDLL, text: str, voice: str, prosody: Prosody, seed: int) -> bytes:
    """Synthesise in this process (only ever called in a forked child)."""
    _chunks.clear()
    ctypes.CDLL(None).srand(ctypes.c_uint(seed))  # the C library's rand(): espeak-ng's breath noise
    lib.espeak_ng_SetRandSeed(seed)
    status = lib.espeak_SetVoiceByName(voice.encode())
    if status != _EE_OK:
        raise VoiceError(f"espeak_SetVoiceByName({voice!r}) failed with status {status}")
    for param, value in ((_PARAM_RATE, prosody.rate), (_PARAM_VOLUME, prosody.volume),
                         (_PARAM_PITCH, prosody.pitch), (_PARAM_RANGE, prosody.range)):
        status = lib.espeak_SetParameter(param, int(value), 0)
        if status != _EE_OK:
            raise EspeakError(f"espeak_SetParameter({param}, {value}) failed with status {status}")
    data = text.encode("utf-8") + b"\0"
    status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if status != _EE_OK:
        raise EspeakError(f"espeak_Synth failed with status {status} for {text!r}")
    return b"".join(_chunks)


def _synthesize_in_child(lib: ctypes.CDLL, text: str, voice: str, prosody: Prosody, seed: int) -> tuple[int, bytes]:
    """Fork, synthesise in the child (:func:`_synthesize_here`), reap it: its wait status and what it sent."""
    read_fd, write_fd = os.pipe()
    # Ctrl-C reaches every process of the terminal's group, this child too. Arriving while the child
    # ran the interpreter's after-fork hooks it printed "Exception ignored in: <function _releaseLock
    # ...> KeyboardInterrupt" (a few per Ctrl-C of a corpus generation). So both signals wait, blocked,
    # until the child ignores Ctrl-C (SIGTERM ends it at once) and the parent is ready to reap it,
    # interrupted or not (an interrupted parent left its child a zombie).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # the child: synthesise, send "0" + samples or "1" + the error, and leave
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read_fd)
            try:
                payload = b"0" + _synthesize_here(lib, text, voice, prosody, seed)
            except Exception as err:  # reported to the parent, which raises it
                payload = b"1" + f"{type(err).__name__}: {err}".encode()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)  # never return into the parent's code (a test runner, a notebook)
    try:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal that waited is handled here
            payload = pipe.read()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _, status = os.waitpid(pid, 0)  # after an interruption too: no child is left a zombie
    return status, payload


def synthesize(text: str, voice: str, prosody: Prosody = Prosody(), seed: int = 0) -> np.ndarray:
    """Speak ``text`` with ``voice`` (``"en-us+f2"``, see :func:`voice_name`) and ``prosody``;
    ``seed`` (0..2**32-1) seeds the random noise of breathy voices.

    Returns int16 samples at :data:`SAMPLE_RATE`. The synthesis runs in a forked child
    (see the module docstring), so the result depends on the arguments alone, never on
    earlier calls or on the process's random state. Needs ``os.fork`` (Linux, macOS).
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in 0..2**32-1, got {seed}")
    if not hasattr(os, "fork"):
        raise EspeakError("emolib's espeak-ng driver needs os.fork (Linux or macOS) to make synthesis reproducible")
    language, plus, variant = voice.partition("+")
    voice_name(language, variant if plus else None)  # VoiceError for names espeak-ng would silently replace
    lib = _library()
    with interrupts_deferred():  # in the main thread a Ctrl-C waits (10 ms) until the child is reaped
        status, payload = _synthesize_in_child(lib, text, voice, prosody, seed)
    if status != 0 or not payload:
        raise EspeakError(f"the espeak-ng child process failed (wait status {status}) for {text!r} with {voice}")
    if payload[:1] == b"1":
        message = payload[1:].decode(errors="replace")
        raise (VoiceError if message.startswith("VoiceError") else EspeakError)(message)
    return np.frombuffer(payload[1:], dtype="<i2").copy()
