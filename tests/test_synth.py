"""The built-in corpus ``synth`` and its espeak-ng driver (emolib/corpora/synth.py, espeak.py)."""
from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emolib.config import CLASSES, SynthConfig
from emolib.corpora import CorpusError, load_corpus
from emolib.corpora import espeak
from emolib.corpora import synth

TINY = SynthConfig(utterances_per_speaker=4)  # 40 utterances, under a second to generate


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EMOLIB_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def wav_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("wav/*/*.wav"))}


# -- the design: speakers, labels, cues (no audio needed) ---------------------------------------


def test_speakers_and_sessions_as_designed():
    plans = synth.plan_corpus(SynthConfig(utterances_per_speaker=8))
    assert len(plans) == 80
    sessions = {}
    for s in synth.SPEAKERS:
        sessions.setdefault(s.session, []).append((s.gender, s.id))
    assert sorted(sessions) == ["S1", "S2", "S3", "S4", "S5"]
    for session, members in sessions.items():
        assert sorted(members) == [("female", f"{session}F"), ("male", f"{session}M")]
    assert len({(s.language, s.variant) for s in synth.SPEAKERS}) == 10  # every speaker a distinct voice
    assert len({s.variant for s in synth.SPEAKERS}) == 10
    assert plans[0].id == "synth_S1F_0001" and plans[-1].id == "synth_S5M_0008"
    assert all(re.fullmatch(r"synth_S[1-5][FM]_\d{4}", p.id) for p in plans)
    for s in synth.SPEAKERS:
        mine = [p for p in plans if p.speaker == s.id]
        assert Counter(p.label for p in mine) == {c: 2 for c in CLASSES}  # balanced per speaker
        assert {p.session for p in mine} == {s.session} and {p.gender for p in mine} == {s.gender}


def test_labels_stay_balanced_when_not_a_multiple_of_four():
    plans = synth.plan_corpus(SynthConfig(utterances_per_speaker=6))
    for s in synth.SPEAKERS:
        counts = Counter(p.label for p in plans if p.speaker == s.id)
        assert sum(counts.values()) == 6 and max(counts.values()) - min(counts.values()) <= 1
    # the remainders continue over the speakers: 2 per speaker still gives every class 5 utterances
    assert Counter(p.label for p in synth.plan_corpus(SynthConfig(utterances_per_speaker=2))) == {c: 5 for c in CLASSES}


@pytest.mark.parametrize("p_lexical, p_vocal", [(0.62, 0.55), (0.3, 0.8)])
def test_cue_frequencies_follow_the_config(p_lexical, p_vocal):
    cfg = SynthConfig(utterances_per_speaker=1000, p_lexical_cue=p_lexical, p_vocal_cue=p_vocal)
    plans = synth.plan_corpus(cfg)  # 10,000 utterances, text only
    lex = np.array([p.lexical_cue for p in plans])
    voc = np.array([p.vocal_cue for p in plans])
    # binomial standard error at n = 10,000 is at most 0.005: 0.02 is 4 of them
    assert abs(lex.mean() - p_lexical) < 0.02
    assert abs(voc.mean() - p_vocal) < 0.02
    assert abs((lex & voc).mean() - p_lexical * p_vocal) < 0.02  # drawn independently
    for c in CLASSES:
        mine = np.array([p.label == c for p in plans])
        assert abs(lex[mine].mean() - p_lexical) < 0.04 and abs(voc[mine].mean() - p_vocal) < 0.04


def test_transcripts_carry_the_label_only_with_a_lexical_cue():
    plans = synth.plan_corpus(SynthConfig(utterances_per_speaker=400))
    fillers = set(synth.FILLERS)

    def only_fillers(text: str) -> bool:
        rest = text
        while rest:
            match = next((f for f in sorted(fillers, key=len, reverse=True) if rest.startswith(f)), None)
            if match is None:
                return False
            rest = rest[len(match):].lstrip()
        return True

    for p in plans:
        assert only_fillers(p.text) != p.lexical_cue, p
    # cue-free turns are drawn from the same fillers for every class: no label in them
    for c in CLASSES:
        used = {p.text for p in plans if p.label == c and not p.lexical_cue}
        assert len(used) > 40
    # the slots keep cue sentences varied even with the default 8 templates per emotion
    for c in CLASSES:
        cues = [p.text for p in plans if p.label == c and p.lexical_cue]
        assert len(set(cues)) > 0.4 * len(cues) and len(cues) > 500
    # with every template (cue_templates=0) they are mostly distinct
    every = synth.plan_corpus(SynthConfig(utterances_per_speaker=400, cue_templates=0))
    for c in CLASSES:
        cues = [p.text for p in every if p.label == c and p.lexical_cue]
        assert len(set(cues)) > 0.6 * len(cues)


def test_cue_templates_limits_each_emotion_to_its_first_templates():
    plans = synth.plan_corpus(SynthConfig(utterances_per_speaker=40, cue_templates=1))
    first = synth.LEXICAL_CUES["angry"]["templates"][0]  # "I am {feeling} that {person} took my {thing} without asking."
    angry = [p.text for p in plans if p.label == "angry" and p.lexical_cue]
    assert angry and all(t.endswith("without asking.") for t in angry), (first, angry[:3])
    with pytest.raises(ValueError, match="cue_templates must be in 0..32"):
        synth.plan_corpus(SynthConfig(cue_templates=33))


def test_spoken_form_drops_question_intonation():
    assert synth.spoken_form("Who do you think you are? Okay.") == "Who do you think you are. Okay."


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="p_lexical_cue must be a probability"):
        synth.plan_corpus(SynthConfig(p_lexical_cue=1.5))
    with pytest.raises(ValueError, match="snr_db must be a"):
        synth.plan_corpus(SynthConfig(snr_db=(45.0, 30.0)))


# -- the Bayes ceilings ---------------------------------------------------------------------------


def test_bayes_ceilings_hand_computed():
    c = synth.bayes_ceilings(0.65, 0.55)
    # text: cue right, filler a 1-in-4 guess: 0.65 + 0.35 / 4
    assert c["text"]["UA"] == pytest.approx(0.7375)
    # voice: baseline -> neutral (1 vs 0.45 likelihood); emotions right when delivered: (1 + 3 * 0.55) / 4
    assert c["voice"]["UA"] == pytest.approx(0.6625)
    # both: the words decide when they can, the voice otherwise: 0.65 + 0.35 * 0.6625
    assert c["both"]["UA"] == pytest.approx(0.881875)
    for v in c.values():
        assert v["WA"] == v["UA"]  # balanced classes
    d = synth.bayes_ceilings(0.62, 0.55)
    assert (d["text"]["UA"], d["voice"]["UA"], d["both"]["UA"]) == pytest.approx((0.715, 0.6625, 0.87175))
    none = synth.bayes_ceilings(0.0, 0.0)  # no cue anywhere: every class ties, chance
    assert [none[k]["UA"] for k in ("text", "voice", "both")] == pytest.approx([0.25, 0.25, 0.25])
    full = synth.bayes_ceilings(1.0, 1.0)
    assert [full[k]["UA"] for k in ("text", "voice", "both")] == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="p_vocal"):
        synth.bayes_ceilings(0.5, -0.1)


def test_oracle_channels_hand_computed():
    """What a perfect teacher of each channel knows (distill.teacher_targets = "oracle")."""
    angry, sad, happy = (synth.CLASSES.index(c) for c in ("angry", "sad", "happy"))
    o = synth.oracle_channels(sad, lexical_cue=True, vocal_cue=False, p_lexical=0.62, p_vocal=0.55)
    np.testing.assert_allclose(o["linguistic"][0], [0, 0, 1, 0])  # the cue names its class
    assert o["linguistic"][1] == sad
    # a baseline voice: neutral always sounds so (1), the others when undelivered (0.45): / 2.35
    np.testing.assert_allclose(o["prosodic"][0], [1 / 2.35, 0.45 / 2.35, 0.45 / 2.35, 0.45 / 2.35])
    assert o["prosodic"][1] == synth.CLASSES.index("neutral")
    o = synth.oracle_channels(happy, lexical_cue=False, vocal_cue=True, p_lexical=0.62, p_vocal=0.55)
    np.testing.assert_allclose(o["linguistic"][0], [0.25] * 4)  # a filler says nothing
    assert o["linguistic"][1] == 4  # the filler's own code, after the K cue codes
    np.testing.assert_allclose(o["prosodic"][0], [0, 0, 0, 1])
    assert o["prosodic"][1] == happy
    # neutral's delivery is the baseline: a neutral "vocal cue" shows nothing new
    n = synth.oracle_channels(0, lexical_cue=False, vocal_cue=True, p_lexical=0.62, p_vocal=0.55)
    np.testing.assert_allclose(n["prosodic"][0], [1 / 2.35, 0.45 / 2.35, 0.45 / 2.35, 0.45 / 2.35])
    assert synth.oracle_channels(angry, True, True, 0.62, 0.55)["prosodic"][1] == angry
    with pytest.raises(ValueError, match="p_lexical"):
        synth.oracle_channels(angry, True, True, 1.5, 0.55)


def test_the_product_of_the_oracle_channels_reaches_the_both_ceiling():
    """Uniform prior: the product of the two channel posteriors is the posterior given both, so
    its Bayes rule scores exactly the 'both' ceiling (expected over the generative design)."""
    p_l, p_v = 0.62, 0.55
    accuracy = 0.0
    for y in range(4):
        for lex, p_lex in ((True, p_l), (False, 1 - p_l)):
            for voc, p_voc in ((True, p_v), (False, 1 - p_v)):
                o = synth.oracle_channels(y, lex, voc, p_l, p_v)
                post = o["linguistic"][0] * o["prosodic"][0]
                winners = np.flatnonzero(np.isclose(post, post.max()))
                accuracy += 0.25 * p_lex * p_voc * (y in winners) / len(winners)
    assert accuracy == pytest.approx(synth.bayes_ceilings(p_l, p_v)["both"]["UA"])


def test_the_generator_reaches_its_ceiling_with_the_oracle_rule():
    """The Bayes rule on the recorded cues (words if they carry the label, else the voice
    if it does, else neutral) scores the computed ceiling on a large draw."""
    cfg = SynthConfig(utterances_per_speaker=1000)
    plans = synth.plan_corpus(cfg)
    y = np.array([p.label for p in plans])
    guess = np.array([p.label if p.lexical_cue or (p.vocal_cue and p.label != "neutral") else "neutral"
                      for p in plans])
    accuracy = (guess == y).mean()
    assert accuracy == pytest.approx(synth.bayes_ceilings(cfg.p_lexical_cue, cfg.p_vocal_cue)["both"]["WA"], abs=0.015)


# -- label noise (annotator disagreement) ---------------------------------------------------------


def test_label_noise_changes_labels_only():
    """``label_noise`` relabels turns from a generator of its own: transcripts, cues and
    prosody (so every audio byte) stay those of the noise-free corpus, which records no
    ``expressed`` emotion; the flipped turns go to the other classes uniformly."""
    clean = synth.plan_corpus(SynthConfig(utterances_per_speaker=200))
    noisy = synth.plan_corpus(SynthConfig(utterances_per_speaker=200, label_noise=0.3))
    assert all(p.expressed is None for p in clean)
    fields = [f.name for f in dataclasses.fields(synth.UtterancePlan) if f.name not in ("label", "expressed")]
    for c, n in zip(clean, noisy, strict=True):
        assert [getattr(c, f) for f in fields] == [getattr(n, f) for f in fields]
        assert n.expressed == c.label  # the emotion the audio expresses is the clean label
    flipped = [(n.expressed, n.label) for n in noisy if n.label != n.expressed]
    # 2,000 turns at 0.3: the binomial sd is 1 %, so 4 sd either side
    assert 0.26 < len(flipped) / len(noisy) < 0.34
    for expressed in CLASSES:
        to = Counter(label for e, label in flipped if e == expressed)
        assert set(to) == set(CLASSES) - {expressed}  # never "flipped" to itself; every other class
        n = sum(to.values())  # uniform: each other class within 4 binomial sd of a third
        assert all(abs(k - n / 3) < 4 * np.sqrt(n * 2 / 9) for k in to.values())
    with pytest.raises(ValueError, match="label_noise must be in"):
        synth.plan_corpus(SynthConfig(label_noise=0.75))


def test_label_noise_ceilings_and_oracle_hand_computed():
    e = 0.3
    text_only = synth.bayes_ceilings(1.0, 0.0, label_noise=e)
    assert text_only["text"]["UA"] == pytest.approx(0.7)  # right whenever the label was not flipped
    # chance stays chance: 0.25 * 0.7 + 0.75 * 0.1
    assert synth.bayes_ceilings(0.0, 0.0, label_noise=e)["both"]["UA"] == pytest.approx(0.25)
    c = 0.87175  # both channels at the defaults, no noise (test_bayes_ceilings_hand_computed)
    assert synth.bayes_ceilings(0.62, 0.55, label_noise=0.1)["both"]["UA"] == pytest.approx(c * 0.9 + (1 - c) * 0.1 / 3)
    np.testing.assert_allclose(synth.noise_matrix(e), [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1],
                                                       [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]])
    sad = synth.CLASSES.index("sad")
    o = synth.oracle_channels(sad, lexical_cue=True, vocal_cue=False, p_lexical=0.62, p_vocal=0.55, label_noise=e)
    expected = [0.1, 0.1, 0.1, 0.1]
    expected[sad] = 0.7
    np.testing.assert_allclose(o["linguistic"][0], expected)  # a cue names the expressed class, not the label
    assert o["linguistic"][1] == sad
    baseline = np.array([1, 0.45, 0.45, 0.45]) / 2.35
    np.testing.assert_allclose(o["prosodic"][0], baseline @ synth.noise_matrix(e))
    with pytest.raises(ValueError, match="label_noise"):
        synth.bayes_ceilings(0.62, 0.55, label_noise=-0.1)


def test_the_oracle_rule_reaches_the_noisy_ceiling_on_a_large_draw():
    cfg = SynthConfig(utterances_per_speaker=1000, label_noise=0.2)
    plans = synth.plan_corpus(cfg)
    guess = np.array([p.expressed if p.lexical_cue or (p.vocal_cue and p.expressed != "neutral") else "neutral"
                      for p in plans])
    accuracy = (guess == np.array([p.label for p in plans])).mean()
    ceiling = synth.bayes_ceilings(cfg.p_lexical_cue, cfg.p_vocal_cue, label_noise=0.2)["both"]["WA"]
    assert accuracy == pytest.approx(ceiling, abs=0.015)


# -- espeak-ng ------------------------------------------------------------------------------------


def test_voice_names_are_checked_against_the_data_folder():
    assert {"f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m6"} <= set(espeak.variants())
    assert {"en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland"} <= set(espeak.languages())
    assert espeak.voice_name("en-US", "f2") == "en-us+f2"
    assert [s.voice for s in synth.SPEAKERS][:2] == ["en-us+f1", "en-gb-x-rp+m1"]
    with pytest.raises(espeak.VoiceError, match="no voice variant 'f9'"):
        espeak.voice_name("en-us", "f9")
    with pytest.raises(espeak.VoiceError, match="no language voice 'xx-zz'"):
        espeak.voice_name("xx-zz", "m1")
    with pytest.raises(espeak.VoiceError, match="no voice variant 'nosuch'"):
        espeak.synthesize("Hello.", "en-us+nosuch")  # espeak-ng alone would say it with the default voice


def test_synthesis_does_not_depend_on_what_came_before():
    a = ("I told you to stay out of the kitchen.", "en+f2", espeak.Prosody(rate=160, pitch=40, range=60))
    b = ("Something else entirely, with many more words in it.", "en-gb-x-rp+m1", espeak.Prosody(rate=200))
    first = espeak.synthesize(*a, seed=7)
    espeak.synthesize(*b, seed=1)
    again = espeak.synthesize(*a, seed=7)
    assert first.dtype == np.int16 and first.size > espeak.SAMPLE_RATE  # over a second of speech
    np.testing.assert_array_equal(first, again)
    # f2 is breathy: its breath noise follows the seed
    assert not np.array_equal(first, espeak.synthesize(*a, seed=8))


CTRL_C_DURING_SYNTHESIS = """
import json, os, random, signal, threading, time
import numpy as np
from emolib.corpora import espeak
text = "I cannot believe you did that to me again, after everything we said."
whole = espeak.synthesize(text, "en-us+f2", seed=1)
armed = False

def ctrl_c(signum, frame):  # raises only while a synthesis runs: a late one lands between trials, harmlessly
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, ctrl_c)
random.seed(0)
outcomes, zombies = [], 0
for trial in range(60):
    timer = threading.Timer(random.uniform(0.0, 0.02), os.killpg, (0, signal.SIGINT))  # Ctrl-C: the whole group
    timer.start()
    try:
        armed = True
        samples = espeak.synthesize(text, "en-us+f2", seed=1)
        armed = False
        outcomes.append("same" if np.array_equal(samples, whole) else "different")
    except KeyboardInterrupt:
        armed = False
        outcomes.append("interrupted")
    timer.join()
    time.sleep(0.01)  # the signal's handler has run by now
    try:
        zombies += os.waitpid(-1, os.WNOHANG)[0] != 0  # a child nobody reaped
    except ChildProcessError:  # no child at all
        pass
print(json.dumps({"outcomes": sorted(set(outcomes)), "interrupted": outcomes.count("interrupted"), "zombies": zombies}))
"""


def test_ctrl_c_during_synthesis_interrupts_cleanly(tmp_path):
    """Ctrl-C reaches the synthesis child too. Landing while the child ran the after-fork hooks it
    printed "Exception ignored in: ... KeyboardInterrupt" tracebacks (20 in 200 Ctrl-Cs), landing in
    espeak-ng's sample callback it was dropped with the samples, and the interrupted parent left its
    child unreaped. Now the child ignores Ctrl-C, the parent raises it and reaps the child. Run in a
    session of its own, so that the group's Ctrl-C reaches nothing else."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CTRL_C_DURING_SYNTHESIS], capture_output=True, text=True,
                          timeout=300, start_new_session=True, env={**os.environ, "EMOLIB_DATA": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # no traceback printed and ignored anywhere
    seen = json.loads(done.stdout)
    assert set(seen["outcomes"]) <= {"same", "interrupted"}, seen  # never a cut clip
    assert seen["interrupted"] > 0 and seen["zombies"] == 0, seen


def test_emotion_deliveries_change_prosody_in_the_designed_direction():
    import opensmile

    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    speaker = synth.SPEAKERS[3]  # S2M, en-us+m3
    base = synth.plan_corpus(TINY)[0]
    measured = {}
    for emotion in CLASSES:
        prosody, level_db = synth.delivery_prosody(speaker, emotion)
        plan = dataclasses.replace(base, text="I can't believe you did that to my car yesterday.", voice=speaker.voice,
                                   prosody=prosody, level_db=level_db, lead_seconds=0.2, trail_seconds=0.2)
        x = synth.render(plan).astype(np.float32) / 32768
        f = smile.process_signal(x, synth.SAMPLE_RATE)
        measured[emotion] = (f["F0semitoneFrom27.5Hz_sma3nz_amean"].iloc[0], f["loudness_sma3_amean"].iloc[0], x.size)
    f0 = {e: m[0] for e, m in measured.items()}
    loud = {e: m[1] for e, m in measured.items()}
    length = {e: m[2] for e, m in measured.items()}
    assert f0["sad"] + 2 < f0["neutral"] < f0["angry"] < f0["happy"]  # semitones
    assert loud["sad"] < loud["neutral"] < loud["happy"] < loud["angry"]
    assert length["angry"] < length["neutral"] < length["sad"]  # rate: faster is shorter


# -- the corpus on disk ----------------------------------------------------------------------------


def test_load_generates_a_complete_corpus(data_root):
    corpus = synth.load(TINY, progress=False)
    folder = synth.corpus_dir(TINY)
    assert folder.parent == data_root / "synth" and corpus.root == folder
    assert corpus.name == "synth" and corpus.has_transcripts and corpus.has_audio
    assert any("Synthetic" in n for n in corpus.notes)
    assert len(corpus) == 40 and Counter(u.label for u in corpus) == {c: 10 for c in CLASSES}
    assert {u.session for u in corpus} == {"S1", "S2", "S3", "S4", "S5"} and len({u.speaker for u in corpus}) == 10
    for u in corpus:
        assert u.path == folder / "wav" / u.speaker / f"{u.id}.wav"
        info = sf.info(str(u.path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert u.duration == info.frames / 16000
        assert set(u.meta) == {"lexical_cue", "vocal_cue", "gender", "voice"}
        assert u.text
    x, _ = sf.read(str(corpus.utterances[0].path), dtype="float64")
    lead = x[:1600]  # the first 100 ms: pause with background noise, never digital zeros
    assert np.any(lead != 0) and np.sqrt(np.mean(lead**2)) < np.sqrt(np.mean(x**2)) / 10
    card = synth.card_path(TINY).read_text()
    assert f"| both | {synth.bayes_ceilings(0.62, 0.55)['both']['UA']:.2%}" in card  # the configured ceilings
    assert "40 utterances" in card and "GPL-3.0" in card and "`en-us+f1`" in card
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 40 and json.loads(lines[0])["path"] == "wav/S1F/synth_S1F_0001.wav"
    same = load_corpus("synth", synth=TINY)  # the dispatcher reaches the same corpus
    assert same.ids == corpus.ids


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    a = synth.generate(TINY, root=tmp_path / "a", progress=False)
    b = synth.generate(TINY, root=tmp_path / "b", progress=False)
    assert wav_bytes(a) == wav_bytes(b) and len(wav_bytes(a)) == 40
    assert (a / "manifest.jsonl").read_bytes() == (b / "manifest.jsonl").read_bytes()
    assert (a / "CARD.md").read_bytes() == (b / "CARD.md").read_bytes()
    other = dataclasses.replace(TINY, seed=1)
    c = synth.generate(other, root=tmp_path / "c", progress=False)
    assert c.name != a.name  # the seed is part of the corpus's identity
    assert wav_bytes(c)["synth_S1F_0001.wav"] != wav_bytes(a)["synth_S1F_0001.wav"]


def test_a_noisy_corpus_has_the_same_audio_and_records_what_each_turn_expresses(tmp_path, data_root):
    noisy_cfg = dataclasses.replace(TINY, label_noise=0.5)
    clean = synth.generate(TINY, root=tmp_path / "clean", progress=False)
    noisy = synth.generate(noisy_cfg, root=tmp_path / "noisy", progress=False)
    assert clean.name != noisy.name and wav_bytes(clean) == wav_bytes(noisy)
    rows = {f: [json.loads(x) for x in (f / "manifest.jsonl").read_text().splitlines()] for f in (clean, noisy)}
    assert all("expressed" not in r["meta"] for r in rows[clean])  # noise-free manifests are as before
    for c, n in zip(rows[clean], rows[noisy], strict=True):
        assert n["meta"]["expressed"] == c["label"] and n["text"] == c["text"]
    flipped = sum(r["label"] != r["meta"]["expressed"] for r in rows[noisy])
    assert f"{flipped} of 40 turns here" in (noisy / "CARD.md").read_text()
    assert "`label_noise=0`" in (clean / "CARD.md").read_text()
    noisy_both = synth.bayes_ceilings(0.62, 0.55, label_noise=0.5)["both"]["UA"]  # 0.87175 * 0.5 + 0.12825 * 0.5 / 3
    assert noisy_both == pytest.approx(0.457250) and f"| both | {noisy_both:.2%}" in (noisy / "CARD.md").read_text()
    corpus = synth.load(noisy_cfg, root=tmp_path / "noisy")
    assert any(f"{flipped} of 40 labels differ" in note for note in corpus.notes)


def test_two_processes_write_the_same_files(tmp_path):
    cfg = SynthConfig(utterances_per_speaker=2)
    one = synth.generate(cfg, root=tmp_path / "one", progress=False)
    two = synth.generate(dataclasses.replace(cfg, processes=2), root=tmp_path / "two", progress=False)
    assert one.name == two.name  # processes is not a generation parameter
    assert wav_bytes(one) == wav_bytes(two)


def test_resume_after_a_kill_regenerates_only_what_is_missing(data_root, monkeypatch):
    folder = synth.generate(TINY, progress=False)
    before = wav_bytes(folder)
    (folder / "manifest.jsonl").unlink()  # killed before the manifest was written...
    (folder / "wav" / "S3M" / "synth_S3M_0002.wav").unlink()  # ...and before this file was
    calls = []
    real = espeak.synthesize
    monkeypatch.setattr(espeak, "synthesize", lambda *a, **k: calls.append(a) or real(*a, **k))
    corpus = synth.load(TINY, progress=False)
    assert len(calls) == 1 and len(corpus) == 40
    assert wav_bytes(folder) == before  # the regenerated file is byte-identical
    assert json.loads((folder / "generation.json").read_text())["synthesised"] == 1


def _count_synthesis(monkeypatch) -> list:
    calls = []
    real = espeak.synthesize
    monkeypatch.setattr(espeak, "synthesize", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_resume_renders_damaged_files_again(data_root, monkeypatch):
    # a damaged copy of the data folder: a file emptied, one cut to a third, one gone
    cfg = SynthConfig(utterances_per_speaker=2, processes=1)  # 20 utterances
    folder = synth.generate(cfg, progress=False)
    before, manifest = wav_bytes(folder), (folder / "manifest.jsonl").read_bytes()
    (folder / "wav" / "S1F" / "synth_S1F_0001.wav").write_bytes(b"")
    cut = folder / "wav" / "S1F" / "synth_S1F_0002.wav"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    (folder / "wav" / "S2M" / "synth_S2M_0001.wav").unlink()
    calls = _count_synthesis(monkeypatch)
    corpus = synth.load(cfg, progress=False)
    assert len(calls) == 3 and len(corpus) == 20
    assert wav_bytes(folder) == before  # rendered again, byte for byte what a fresh generation writes
    assert (folder / "manifest.jsonl").read_bytes() == manifest
    assert json.loads((folder / "generation.json").read_text())["synthesised"] == 3


def test_a_complete_corpus_with_damaged_files_is_finished_not_used(data_root, monkeypatch):
    # the manifest is there and every file exists, but one is cut and one has bytes appended:
    # their sizes give them away
    cfg = SynthConfig(utterances_per_speaker=2, processes=1)
    folder = synth.generate(cfg, progress=False)
    before = wav_bytes(folder)
    cut = folder / "wav" / "S3M" / "synth_S3M_0002.wav"
    cut.write_bytes(cut.read_bytes()[:-2])  # one sample short: still a readable wav
    longer = folder / "wav" / "S4F" / "synth_S4F_0001.wav"
    longer.write_bytes(longer.read_bytes() + b"\0" * 10)
    calls = _count_synthesis(monkeypatch)
    corpus = synth.load(cfg, progress=False)
    assert len(calls) == 2 and len(corpus) == 20 and wav_bytes(folder) == before
    assert json.loads((folder / "generation.json").read_text())["synthesised"] == 2


def test_a_manifest_cut_at_a_line_end_is_rewritten_not_read_as_a_smaller_corpus(data_root, monkeypatch):
    """A copy of the data folder interrupted (or a full disk) can cut the manifest after a whole line:
    it was read as a corpus of half the utterances, and every run trained on the whole one was then
    called stale (with the advice to delete it). The design says how many rows there are: the
    corpus is finished instead, with nothing synthesised again."""
    cfg = SynthConfig(utterances_per_speaker=2, processes=1)  # 20 utterances
    folder = synth.generate(cfg, progress=False)
    manifest = (folder / "manifest.jsonl").read_bytes()
    (folder / "manifest.jsonl").write_bytes(b"".join(manifest.splitlines(keepends=True)[:8]))
    calls = _count_synthesis(monkeypatch)
    corpus = synth.load(cfg, progress=False)
    assert len(corpus) == 20 == synth.corpus_size(cfg) == len(synth.plan_corpus(cfg)) and not calls
    assert (folder / "manifest.jsonl").read_bytes() == manifest


def test_a_complete_corpus_is_read_without_synthesis(data_root, monkeypatch):
    first = synth.load(TINY, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("synthesised although the corpus is complete")

    monkeypatch.setattr(espeak, "synthesize", refuse)
    second = synth.load(TINY, progress=False)
    assert second.ids == first.ids and [u.duration for u in second] == [u.duration for u in first]
    assert [u.meta for u in second] == [u.meta for u in first]


def test_a_malformed_manifest_line_names_the_file_and_line(data_root):
    folder = synth.generate(TINY, progress=False)
    manifest = folder / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    lines[2] = '{"id": "synth_S1F_0003"'
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"manifest\.jsonl, line 3"):
        synth.load(TINY, progress=False)
    # bytes that are not UTF-8 (a line of another file appended): they were "'utf-8' codec can't decode byte
    # 0xff in position ...", naming neither the file nor the line
    manifest.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with manifest.open("ab") as f:
        f.write(b"\xff\xfe\n")
    with pytest.raises(CorpusError, match=rf"^{re.escape(str(manifest))}, line {len(lines)}: not a synth manifest "
                                          r"row \(UnicodeDecodeError\(.*\)\); delete the file to regenerate it$"):
        synth.load(TINY, progress=False)
