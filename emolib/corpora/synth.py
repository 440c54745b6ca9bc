"""The built-in corpus ``synth``: an IEMOCAP-shaped emotional speech corpus made with espeak-ng.

No emotional speech corpus can be downloaded on the machines this project is built on,
so the report's default runs on a corpus it generates itself, deterministically from a
seed (Sec. 4.1 of the paper uses IEMOCAP; see ``docs/NOTES.md``). It is a stand-in shaped so
that the paper's question can be asked of it honestly: can a speech-only student that
learns from a linguistic and a prosodic teacher beat both?

- Four classes (:data:`emolib.config.CLASSES`), five sessions of two speakers (one female,
  one male voice), so leave-one-session-out works as on IEMOCAP. Every speaker is a
  distinct espeak-ng voice: variant, English accent, base pitch, pitch range, rate, level.
- **Two independent channels, each informative only in part.**
  *Words*: with probability ``p_lexical_cue`` the transcript carries a cue of its emotion
  (hand-written templates, ``cue_templates`` per emotion, with word lists; neutral's cue is a
  matter-of-fact sentence about everyday things), otherwise it is an emotion-free filler
  shared by all classes ("Yeah.", "Tell me about it."), like IEMOCAP's many cue-free turns.
  *Voice*: with probability ``p_vocal_cue`` the utterance is delivered with its emotion's
  change of pitch level, pitch range, rate and loudness relative to the speaker's baseline
  (:data:`DELIVERIES`), otherwise with the baseline; every utterance gets jitter on every
  prosodic control (:data:`JITTER_SD`), so that single utterances overlap.
  A text-only model and a voice-only model therefore have ceilings below 100 % and a model
  of both a higher one (:func:`bayes_ceilings`): the situation in which the paper's student
  can beat both teachers. Each utterance records which channels carry its label
  (``meta["lexical_cue"]``, ``meta["vocal_cue"]``).
- Audio is not digitally clean: 100-400 ms of leading and trailing pause and white
  background noise at a random SNR (30-45 dB) surround every sentence.

Everything random about an utterance is drawn from a generator seeded by
``(seed, speaker, index)`` before any audio is made (:func:`plan_corpus`), and espeak-ng
runs in a fresh child process per utterance (:mod:`emolib.corpora.espeak`), so a resumed or
partial generation writes byte-identical files.

On disk: ``<data>/synth/<key>/`` with ``wav/<speaker>/<id>.wav`` (16 kHz mono PCM16),
``CARD.md`` (the corpus card), ``generation.json`` (time taken) and ``manifest.jsonl``,
written last: its presence marks the corpus complete. ``<key>`` hashes every generation
parameter, the tables of this module, the generator version and the espeak-ng version.
Licence: espeak-ng (GPL-3.0) is only called at run time; the texts are hand-written here.
"""
from __future__ import annotations

import dataclasses
import io
import json
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import paths
from ..audio import SAMPLE_RATE, AudioError, audio_info  # SAMPLE_RATE: what every speech model of the paper reads
from ..config import CLASSES, SynthConfig, _hashed_dict, config_hash
from ..machine import available_cores, forked_map
from ..runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from . import Corpus, CorpusError, Utterance, espeak

#: Bump when the code below changes what is generated (the tables are hashed on their own).
GENERATOR_VERSION = 1

MANIFEST = "manifest.jsonl"
CARD = "CARD.md"

# -- the speakers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """One voice: an espeak-ng variant and accent, and the speaker's neutral baseline."""

    id: str
    session: str
    gender: str
    language: str  # espeak-ng language voice (the accent)
    variant: str  # espeak-ng voice variant (m1.., f1..)
    pitch: int  # espeak-ng base pitch 0..99 (50 = the variant's own register)
    range: int  # espeak-ng pitch range 0..99 (50 = the variant's own)
    rate: int  # words per minute (espeak-ng's default is 175)
    level_db: float  # recording level relative to the corpus's reference level

    @property
    def voice(self) -> str:
        return espeak.voice_name(self.language, self.variant)


#: Five sessions of one female and one male voice (as IEMOCAP's five dyadic sessions). The
#: five female variants are all that espeak-ng has; the male ones leave out m5 (no pitch of
#: its own), m7 and m8 (unusual voicing and tone filters). Accents are the mature English
#: ones, mixed across sessions; baselines spread over the variants' natural register.
SPEAKERS: tuple[Speaker, ...] = (
    Speaker("S1F", "S1", "female", "en-us", "f1", pitch=50, range=50, rate=170, level_db=0.0),
    Speaker("S1M", "S1", "male", "en-gb-x-rp", "m1", pitch=45, range=55, rate=160, level_db=-1.5),
    Speaker("S2F", "S2", "female", "en", "f2", pitch=55, range=45, rate=180, level_db=1.0),
    Speaker("S2M", "S2", "male", "en-us", "m3", pitch=50, range=50, rate=175, level_db=0.5),
    Speaker("S3F", "S3", "female", "en-gb-x-rp", "f3", pitch=45, range=55, rate=165, level_db=-1.0),
    Speaker("S3M", "S3", "male", "en-029", "m2", pitch=50, range=45, rate=170, level_db=1.5),
    Speaker("S4F", "S4", "female", "en-029", "f4", pitch=50, range=60, rate=175, level_db=-0.5),
    Speaker("S4M", "S4", "male", "en-gb-scotland", "m4", pitch=55, range=50, rate=165, level_db=0.0),
    Speaker("S5F", "S5", "female", "en-gb-scotland", "f5", pitch=40, range=50, rate=160, level_db=0.5),
    Speaker("S5M", "S5", "male", "en", "m6", pitch=45, range=55, rate=185, level_db=-0.5),
)

# -- the voice channel -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A change of the four prosodic controls relative to a speaker's baseline."""

    pitch: float  # espeak-ng pitch units (about 0.2 semitone each, measured)
    range: float  # espeak-ng range units
    rate: float  # relative change of words per minute (0.1 = 10 % faster)
    level_db: float  # loudness change in dB


#: Each emotion's delivery. Directions follow the vocal-expression literature (Banse &
#: Scherer 1996; Juslin & Laukka 2003: anger higher, wider, faster, louder; sadness lower,
#: narrower, slower, softer; joy highest and widest); sizes follow the eGeMAPS differences
#: measured on espeak-ng presets (docs/ENVIRONMENT.md, voice m3: F0 +3.1 st angry, -4.7 st sad,
#: +5.4 st happy; loudness x1.42, x0.74, x1.23). Neutral's delivery is the baseline.
DELIVERIES: dict[str, Delivery] = {
    "neutral": Delivery(pitch=0, range=0, rate=0.0, level_db=0.0),
    "angry": Delivery(pitch=12, range=20, rate=0.12, level_db=5.0),
    "sad": Delivery(pitch=-22, range=-20, rate=-0.18, level_db=-4.5),
    "happy": Delivery(pitch=20, range=30, rate=0.06, level_db=3.0),
}

#: Standard deviations of the per-utterance jitter of every control (times
#: ``SynthConfig.jitter``): about a third of the smallest emotion change, so single
#: utterances of different deliveries overlap while their means stay apart.
JITTER_SD = Delivery(pitch=4, range=8, rate=0.05, level_db=1.5)

#: espeak-ng output at volume 100 peaks at about -2 dBFS; the corpus sits 9 dB lower so that
#: the loudest delivery plus jitter rarely reaches full scale (rare peaks are clipped).
REFERENCE_LEVEL_DB = -9.0

# -- the word channel ------------------------------------------------------------------------

#: Emotion-free turns shared by every class (IEMOCAP has many: "Yeah.", "Okay.").
FILLERS: tuple[str, ...] = (
    "Yeah.", "Okay.", "I don't know what to say.", "Tell me about it.", "Hmm.", "Right.",
    "What do you mean?", "Go on.", "Uh huh.", "I see.", "Well, maybe.", "Let me think about it.",
    "So what now?", "Is that so?", "You think so?", "Alright.", "I guess.", "We'll see.",
    "Say that again?", "Where were we?", "And then what?", "I heard you.", "Sure.", "Okay, and?",
    "What was that?", "Hold on a second.", "Are you sure?", "That's what they said.", "I don't know.",
    "Maybe.", "Well.", "Yes.", "No.", "Oh.", "Really?", "If you say so.", "What about it?",
    "Is that right?", "Just a minute.", "Let me see.", "So?", "Anyway.", "I mean, yeah.",
    "Go ahead.", "Wait.", "Uh, okay.", "That's it.", "You know.",
)

#: Slot words shared by every emotion, so that they carry no label.
SHARED_SLOTS: dict[str, tuple[str, ...]] = {
    "person": (
        "my brother", "my sister", "your mother", "my dad", "the neighbour", "my boss", "Sarah", "Michael",
        "the kids", "my roommate", "Jenny", "our landlord", "the new guy at work", "my cousin", "Grandpa",
        "David", "the teacher", "my friend Tom", "Lisa", "the manager", "Aunt Carol", "Kevin",
    ),
    "thing": (
        "car", "phone", "laptop", "spare key", "bike", "jacket", "wallet", "camera", "guitar", "ticket",
        "letter", "report", "coffee machine", "umbrella", "backpack", "watch", "lamp", "sofa", "printer",
        "notebook", "suitcase", "radio",
    ),
    "place": (
        "kitchen", "office", "garage", "living room", "station", "library", "supermarket", "airport",
        "apartment", "backyard", "bank", "hotel", "restaurant", "parking lot", "gym", "bakery",
        "post office", "school", "garden", "lobby",
    ),
    "past": (
        "yesterday", "last night", "this morning", "on Monday", "last week", "two days ago", "last month",
        "after lunch", "over the weekend", "this afternoon", "on Friday",
    ),
    "future": (
        "tomorrow", "next week", "later today", "this evening", "on Saturday", "next month", "after lunch",
        "on Thursday", "in the morning",
    ),
    "time": ("seven", "half past eight", "noon", "nine thirty", "ten", "six fifteen", "a quarter to five",
             "eleven", "three o'clock"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "number": ("two", "three", "four", "five", "six", "ten", "twelve", "twenty"),
}

#: Per emotion: sentence templates (``{slot}`` names a shared or an own slot) and the
#: emotion's own words. Neutral's cue is a matter-of-fact statement about everyday things.
#: Hand-written for this project (no emotion lexicon is copied: NRC's is research-only).
LEXICAL_CUES: dict[str, dict[str, Any]] = {
    "neutral": {
        "templates": (
            "I think the {thing} is still in the {place}.",
            "{person} said the meeting moved to {day}.",
            "I need to {errand} before {time}.",
            "The bus to the {place} leaves at {time}.",
            "We usually have dinner around {time} on weekdays.",
            "I left the {thing} on the table in the {place}.",
            "The {place} closes at {time} on {day}.",
            "Can you {errand} on {day}?",
            "{person} is picking up the {thing} {future}.",
            "The form for the {place} needs {number} signatures.",
            "I parked the car near the {place}.",
            "There are {number} chairs in the {place}.",
            "The train was on time {past}.",
            "I think the {thing} needs new batteries.",
            "{person} works at the {place} near the station now.",
            "The next appointment is on {day} at {time}.",
            "We moved the {thing} to the {place}.",
            "The {document} is due on {day} before {time}.",
            "I'll {errand} {future} if I have time.",
            "It takes about {number} minutes to walk to the {place}.",
            "Please {errand} when you get a chance.",
            "The {place} is on the second floor.",
            "{person} asked if you could call back {future}.",
            "I bought milk and bread at the {place}.",
            "The package from {person} should arrive {future}.",
            "The meeting room is booked until {time}.",
            "My {thing} is the grey one by the door.",
            "We need {number} more boxes for the {place}.",
            "I sent {person} the {document} {past}.",
            "The {document} is in the top drawer.",
            "{person} usually takes the train at {time}.",
            "The {place} has new opening hours starting {future}.",
        ),
        "slots": {
            "errand": (
                "do the laundry", "check the mail", "buy groceries", "call the plumber", "return the library books",
                "water the plants", "fill up the tank", "pay the electricity bill", "pick up the dry cleaning",
                "take out the recycling", "book the dentist", "print the forms", "update the calendar",
                "reset the router", "renew the parking permit", "defrost the freezer",
            ),
            "document": (
                "invoice", "timetable", "receipt", "manual", "schedule", "tax form", "rental contract",
                "meeting agenda", "insurance form", "shopping list", "delivery note", "warranty card",
            ),
        },
    },
    "angry": {
        "templates": (
            "I am {feeling} that {person} took my {thing} without asking.",
            "This is {verdict}, I have had enough of it.",
            "I told you to stay out of the {place}.",
            "Don't you dare lie to me about the {thing} again.",
            "You broke my {thing} and you didn't even say sorry.",
            "{person} never listens to a word I say.",
            "Get out of my {place} right now.",
            "{person} yelled at me {past} and I am still {feeling}.",
            "It is {verdict} that they charged me twice for the {thing}.",
            "Stop blaming me for everything that goes wrong.",
            "I waited {number} hours and nobody showed up.",
            "Why do you always ruin everything?",
            "I can't stand the way {person} talks to me.",
            "Keep your hands off my {thing}.",
            "I'm {feeling}, you promised you would fix the {thing} {past}.",
            "I won't let {person} push me around anymore.",
            "You had no right to go through my {thing}.",
            "Don't walk away from me when I'm talking to you.",
            "Who do you think you are?",
            "They lost my {thing} and nobody even cares.",
            "I am sick of cleaning up after you.",
            "You embarrassed me in front of everyone at the {place}.",
            "Shut up and listen to me for once.",
            "I told {person} to stop and they laughed.",
            "They cancelled on me for the third time, it's {verdict}.",
            "I'm {feeling} and I don't want to hear your excuses.",
            "Somebody scratched my {thing} in the {place} and just walked off.",
            "Don't you ever speak to me like that again.",
            "You're late again and I'm {feeling} about it.",
            "I hate it when {person} interrupts me.",
            "Give me back my {thing} right now.",
            "This is {verdict}, I want to speak to the manager.",
        ),
        "slots": {
            "feeling": (
                "furious", "livid", "so angry", "fed up", "sick and tired", "fuming", "outraged", "really mad",
                "beyond angry", "disgusted", "irritated", "enraged", "pissed off", "so annoyed",
            ),
            "verdict": (
                "ridiculous", "unacceptable", "outrageous", "insulting", "a disgrace", "a joke", "absurd",
                "pathetic", "infuriating", "completely unfair", "a scandal", "disrespectful",
            ),
        },
    },
    "sad": {
        "templates": (
            "I miss {person} so much it hurts.",
            "Nothing has felt right since {person} moved away.",
            "I cried all night {past}.",
            "I feel {feeling} without {person}.",
            "We had to sell the {thing} and I keep thinking about it.",
            "It's {verdict}, I don't think things will ever get better.",
            "{person} didn't even call me on my birthday.",
            "I sat alone in the {place} for hours.",
            "I lost my grandmother's {thing} and I can never get it back.",
            "Everyone forgot about me {past}.",
            "I'm {feeling}, I didn't get the job.",
            "I don't have the strength to get out of bed anymore.",
            "The {place} feels so empty now that {person} is gone.",
            "I keep looking at old photos and crying.",
            "It's {verdict} to see {person} like this.",
            "Our dog died {past} and the house is so quiet.",
            "I tried so hard and I still failed.",
            "{person} said goodbye {past} and I haven't stopped crying.",
            "I wish I could go back and say sorry to {person}.",
            "I have nobody left to talk to.",
            "I've been {feeling} ever since the funeral.",
            "I found my father's old {thing} and just broke down.",
            "Nobody came to my party {past}.",
            "I feel like such a failure.",
            "It's {verdict}, we never got to say goodbye.",
            "I used to love going to the {place} with {person}.",
            "I don't think {person} loves me anymore.",
            "Everything reminds me of what we lost.",
            "I'm {feeling} and I don't know how to fix it.",
            "We buried my grandfather {past}.",
            "I walked past the {place} and remembered {person}, and it hurt.",
            "I'm so {feeling}, I just want to be alone.",
        ),
        "slots": {
            "feeling": (
                "heartbroken", "miserable", "so sad", "devastated", "lonely", "hopeless", "empty inside",
                "crushed", "depressed", "so low", "broken", "lost", "grief stricken", "down",
            ),
            "verdict": (
                "heartbreaking", "so sad", "tragic", "painful", "too much to bear", "hopeless",
                "the worst feeling", "so depressing", "awful to think about", "unbearable", "gutting",
                "a terrible loss",
            ),
        },
    },
    "happy": {
        "templates": (
            "I'm {feeling}, I finally got the job.",
            "{person} is coming to visit {future}, I can't wait.",
            "This is the best {thing} I have ever had.",
            "We won the game {past}, it was {verdict}.",
            "I'm {feeling} about the new {thing}.",
            "I passed the exam, I can't believe it.",
            "{person} said yes, we are getting married.",
            "It's {verdict}, we're going on holiday on {day}.",
            "I love the {place}, it is {verdict}.",
            "Thank you so much, this {thing} is {verdict}.",
            "We had so much fun at the {place} {past}.",
            "I'm {feeling}, {person} is having a baby.",
            "I got a raise {past}, let's celebrate.",
            "You made my day, thank you so much.",
            "I laughed so hard when {person} told that story.",
            "Guess what, I got into the university.",
            "I'm {feeling} we finally bought the house.",
            "Everything is going so well for us right now.",
            "{person} surprised me with a new {thing} for my birthday.",
            "It's {verdict} to see you again after all these years.",
            "I've never been so {feeling} in my life.",
            "The party at the {place} {past} was {verdict}.",
            "We're going to the beach on {day}, I'm {feeling}.",
            "I finally finished the marathon and I feel great.",
            "{person} loved the {thing} I made.",
            "This is the happiest day of my life.",
            "I can't stop smiling since {person} called.",
            "We got tickets for the concert on {day}.",
            "Our team won the award, it's {verdict}.",
            "I'm {feeling} for you, you totally deserve it.",
            "We found the perfect {place} for the wedding.",
            "I'm {feeling}, the doctor said the baby is healthy.",
        ),
        "slots": {
            "feeling": (
                "thrilled", "delighted", "so happy", "excited", "overjoyed", "so glad", "ecstatic",
                "over the moon", "so grateful", "really proud", "on cloud nine", "so pleased", "elated",
                "happy",
            ),
            "verdict": (
                "wonderful", "amazing", "fantastic", "the best news", "perfect", "brilliant", "incredible",
                "a dream come true", "awesome", "lovely", "so much fun", "great",
            ),
        },
    },
}

#: How turns are put together. A cue sentence sometimes follows a filler ("Yeah. I miss
#: Sarah so much it hurts."); a cue-free turn is one or two fillers. Fillers carry no label,
#: so neither choice changes any ceiling; they vary the length as real turns do.
P_FILLER_BEFORE_CUE = 0.25
P_SECOND_FILLER = 0.3


def _fill(template: str, slots: dict[str, tuple[str, ...]], rng: np.random.Generator) -> str:
    """Fill every ``{slot}`` of a template with a word drawn from ``slots``."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    words = {name: slots[name][rng.integers(len(slots[name]))] for name in names}
    text = template.format(**words)
    return text[0].upper() + text[1:]


def draw_transcript(label: str, lexical_cue: bool, rng: np.random.Generator, cue_templates: int = 0) -> str:
    """One turn: a cue of ``label`` when ``lexical_cue``, otherwise fillers shared by all classes.
    ``cue_templates`` > 0 uses only the first that many templates of each emotion."""
    if lexical_cue:
        cue = LEXICAL_CUES[label]
        templates = cue["templates"][:cue_templates] if cue_templates else cue["templates"]
        sentence = _fill(templates[rng.integers(len(templates))], {**SHARED_SLOTS, **cue["slots"]}, rng)
        if rng.random() < P_FILLER_BEFORE_CUE:
            sentence = f"{FILLERS[rng.integers(len(FILLERS))]} {sentence}"
        return sentence
    first = FILLERS[rng.integers(len(FILLERS))]
    if rng.random() < P_SECOND_FILLER:
        second = FILLERS[rng.integers(len(FILLERS))]
        if second != first:
            return f"{first} {second}"
    return first


def spoken_form(text: str) -> str:
    """What espeak-ng is given: the transcript with declarative punctuation, so that a
    question's rising tune (which the templates of some emotions use more often than
    others) cannot carry the lexical cue into the voice channel."""
    return text.replace("?", ".").replace("!", ".")


# -- the plan: every random choice, before any audio ---------------------------------------------


@dataclass(frozen=True)
class UtterancePlan:
    """Everything about one utterance that is drawn at random; the audio follows from it."""

    id: str
    label: str
    speaker: str
    session: str
    gender: str
    text: str
    lexical_cue: bool
    vocal_cue: bool
    voice: str  # espeak-ng voice name
    prosody: espeak.Prosody
    level_db: float  # gain applied after synthesis, relative to espeak-ng's output
    lead_seconds: float
    trail_seconds: float
    snr_db: float
    noise_seed: int  # seeds the background noise and espeak-ng's breath noise
    expressed: str | None = None  # the emotion the words and voice express, when the label differs (label noise)

    @property
    def relpath(self) -> str:
        return f"wav/{self.speaker}/{self.id}.wav"


def delivery_prosody(speaker: Speaker, emotion: str | None,
                     jitter: np.ndarray | None = None) -> tuple[espeak.Prosody, float]:
    """The espeak-ng controls and the gain (dB) for ``speaker`` delivering ``emotion``
    (None: the baseline), plus ``jitter`` (4 standard-normal draws, scaled by
    :data:`JITTER_SD`; None: no jitter). Values are clipped to espeak-ng's ranges."""
    d = DELIVERIES[emotion] if emotion is not None else DELIVERIES["neutral"]
    z = np.zeros(4) if jitter is None else np.asarray(jitter, dtype=float)
    pitch = speaker.pitch + d.pitch + z[0] * JITTER_SD.pitch
    range_ = speaker.range + d.range + z[1] * JITTER_SD.range
    rate = speaker.rate * (1.0 + d.rate) * (1.0 + z[2] * JITTER_SD.rate)
    level_db = REFERENCE_LEVEL_DB + speaker.level_db + d.level_db + z[3] * JITTER_SD.level_db
    prosody = espeak.Prosody(
        rate=int(np.clip(round(rate), 80, 450)),
        pitch=int(np.clip(round(pitch), 0, 99)),
        range=int(np.clip(round(range_), 0, 99)),
    )
    return prosody, round(float(level_db), 3)


def _check(synth: SynthConfig) -> None:
    problems = []
    if synth.utterances_per_speaker < 1:
        problems.append(f"utterances_per_speaker must be >= 1, got {synth.utterances_per_speaker}")
    for name in ("p_lexical_cue", "p_vocal_cue"):
        if not 0.0 <= getattr(synth, name) <= 1.0:
            problems.append(f"{name} must be a probability in [0, 1], got {getattr(synth, name)}")
    for name, floor in (("snr_db", -np.inf), ("silence_seconds", 0.0)):
        pair = getattr(synth, name)
        if len(pair) != 2 or not floor <= pair[0] <= pair[1]:
            problems.append(f"{name} must be a (low, high) pair with {floor} <= low <= high, got {pair}")
    if (problem := _label_noise_problem(synth.label_noise, len(CLASSES))) is not None:
        problems.append(problem)
    if synth.jitter < 0:
        problems.append(f"jitter must be >= 0, got {synth.jitter}")
    fewest = min(len(cue["templates"]) for cue in LEXICAL_CUES.values())
    if not 0 <= synth.cue_templates <= fewest:
        problems.append(f"cue_templates must be in 0..{fewest} (0 = all), got {synth.cue_templates}")
    if synth.processes < 0:
        problems.append(f"processes must be >= 0 (0 = every core), got {synth.processes}")
    if problems:
        raise ValueError("SynthConfig: " + "; ".join(problems))


def annotated_label(expressed: str, label_noise: float, seed: list[int]) -> str:
    """The label a turn is released with: its expressed emotion, or with probability
    ``label_noise`` one of the other classes, uniformly (symmetric label noise). Drawn from its
    own generator, so that the noise moves no other draw: the audio and transcripts of a corpus
    do not depend on ``label_noise``."""
    if label_noise <= 0:
        return expressed
    rng = np.random.default_rng(seed)
    if rng.random() >= label_noise:
        return expressed
    others = [c for c in CLASSES if c != expressed]
    return others[int(rng.integers(len(others)))]


def corpus_size(synth: SynthConfig) -> int:
    """How many utterances :func:`plan_corpus` draws, without drawing them (a complete corpus's
    manifest has exactly this many rows)."""
    return len(SPEAKERS) * synth.utterances_per_speaker


def plan_corpus(synth: SynthConfig | None = None) -> list[UtterancePlan]:
    """Draw every utterance of the corpus (labels, cues, transcripts, prosody, pauses,
    noise) without making audio. Expressed emotions are balanced per speaker (counts differ by
    at most one when ``utterances_per_speaker`` is not a multiple of 4), in a shuffled order; all
    other draws come from a generator seeded by ``(seed, speaker, index)``. With ``label_noise``
    the released labels are balanced in expectation only (:func:`annotated_label`)."""
    synth = synth or SynthConfig()
    _check(synth)
    n = synth.utterances_per_speaker
    width = max(4, len(str(n)))
    plans = []
    for s, speaker in enumerate(SPEAKERS):
        voice = speaker.voice  # checked against the espeak-ng data folder once per speaker
        # n // 4 of each class; the remainder's classes continue from the previous speaker's,
        # so that small corpora stay balanced overall; then a seeded shuffle
        offset = s * (n % len(CLASSES))
        order = np.random.default_rng([synth.seed, s, 0, 0]).permutation(n)
        labels = [CLASSES[(i + offset) % len(CLASSES)] for i in order]
        for index, label in enumerate(labels):
            rng = np.random.default_rng([synth.seed, s, 1, index])
            lexical_cue = bool(rng.random() < synth.p_lexical_cue)
            vocal_cue = bool(rng.random() < synth.p_vocal_cue)
            jitter = rng.standard_normal(4) * synth.jitter
            lead, trail = rng.uniform(*synth.silence_seconds, size=2)
            snr_db = rng.uniform(*synth.snr_db)
            noise_seed = int(rng.integers(2**32))
            text = draw_transcript(label, lexical_cue, rng, synth.cue_templates)  # last: moves no other draw
            prosody, level_db = delivery_prosody(speaker, label if vocal_cue else None, jitter)
            released = annotated_label(label, synth.label_noise, [synth.seed, s, 2, index])
            plans.append(UtterancePlan(
                id=f"synth_{speaker.id}_{index + 1:0{width}d}", label=released, speaker=speaker.id,
                session=speaker.session, gender=speaker.gender, text=text, lexical_cue=lexical_cue,
                vocal_cue=vocal_cue, voice=voice, prosody=prosody, level_db=level_db,
                lead_seconds=round(float(lead), 4), trail_seconds=round(float(trail), 4),
                snr_db=round(float(snr_db), 3), noise_seed=noise_seed,
                expressed=label if synth.label_noise > 0 else None,
            ))
    return plans


# -- audio ------------------------------------------------------------------------------------


def render(plan: UtterancePlan) -> np.ndarray:
    """The utterance's 16 kHz int16 samples: espeak-ng speech (its own zero padding cut),
    resampled 22,050 -> 16,000 Hz with soxr, gain, pauses, then background noise."""
    import soxr

    raw = espeak.synthesize(spoken_form(plan.text), plan.voice, plan.prosody, seed=plan.noise_seed)
    voiced = np.flatnonzero(raw)
    if voiced.size == 0:
        raise espeak.EspeakError(f"espeak-ng produced silence for {plan.id}: {plan.text!r} ({plan.voice})")
    speech = raw[voiced[0]: voiced[-1] + 1].astype(np.float64) / 32768.0
    speech = soxr.resample(speech, espeak.SAMPLE_RATE, SAMPLE_RATE, quality="HQ") * 10 ** (plan.level_db / 20)
    lead, trail = (int(round(s * SAMPLE_RATE)) for s in (plan.lead_seconds, plan.trail_seconds))
    signal = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
    noise_rms = np.sqrt(np.mean(speech**2)) / 10 ** (plan.snr_db / 20)
    signal += noise_rms * np.random.default_rng(plan.noise_seed).standard_normal(signal.size)
    return np.clip(np.round(signal * 32767), -32768, 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray) -> bytes:
    """A 16 kHz mono PCM16 WAV file's bytes (soundfile writes no time stamps: deterministic)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _render_to_file(plan: UtterancePlan, path: Path) -> int:
    """Render one utterance and write it atomically; returns its number of samples."""
    samples = render(plan)
    atomic_write_bytes(path, wav_bytes(samples))
    return samples.size


def _render_one(job: tuple[UtterancePlan, Path]) -> int:
    """:func:`_render_to_file` of one ``(plan, path)``, for :func:`~emolib.machine.forked_map`."""
    return _render_to_file(*job)


# -- the Bayes ceilings --------------------------------------------------------------------------


def _text_likelihood(y: int, p_lexical: float) -> dict[str, float]:
    """P(what the words show | class y): a present lexical cue names its class, a filler turn nothing."""
    return {f"cue:{y}": p_lexical, "filler": 1.0 - p_lexical}


def _voice_likelihood(y: int, p_vocal: float, neutral: int) -> dict[str, float]:
    """P(what the voice shows | class y): neutral's delivery *is* the baseline."""
    if y == neutral:
        return {"baseline": 1.0}
    return {f"delivery:{y}": p_vocal, "baseline": 1.0 - p_vocal}


def bayes_ceilings(p_lexical: float, p_vocal: float, classes: tuple[str, ...] = CLASSES, *,
                   label_noise: float = 0.0) -> dict[str, dict[str, float]]:
    """The best accuracy any model can reach from the words, the voice, or both, computed
    exactly from the generative design (classes balanced, as every speaker's are):

    - a present lexical cue names its class (each class has its own templates, neutral too);
      a filler turn says nothing;
    - a present vocal cue names its class, except neutral's, whose delivery *is* the
      baseline: a baseline delivery is what every utterance without a vocal cue sounds like;
    - the two cues are drawn independently.

    The Bayes rule picks the most probable class for every observation; ties are broken
    uniformly at random (in expectation). Returns ``{"text"|"voice"|"both": {"WA", "UA"}}``
    as fractions; with balanced classes WA equals UA. Closed forms with K classes:
    text ``p_l + (1 - p_l) / K``; voice ``(1 + (K - 1) p_v) / K`` (for p_v > 0: a baseline
    delivery is called neutral); both ``p_l + (1 - p_l) * voice``.

    With ``label_noise`` e (symmetric, :func:`annotated_label`) the Bayes rule still picks the
    expressed emotion's most probable class, and a ceiling ``c`` against the expressed emotion
    becomes ``c (1 - e) + (1 - c) e / (K - 1)`` against the released labels (in expectation: the
    released labels are balanced only in expectation).
    """
    k = len(classes)
    _check_probabilities(p_lexical, p_vocal, label_noise, k)
    neutral = classes.index("neutral")

    # P(observation | class y), one table per class; the channels are independent given y
    text = [_text_likelihood(y, p_lexical) for y in range(k)]
    voice = [_voice_likelihood(y, p_vocal, neutral) for y in range(k)]
    both = [{(t, v): pt * pv for t, pt in text[y].items() for v, pv in voice[y].items()} for y in range(k)]

    out = {}
    for channel, tables in (("text", text), ("voice", voice), ("both", both)):
        observations = set().union(*tables)
        recall = np.zeros(k)
        for o in observations:
            scores = np.array([t.get(o, 0.0) for t in tables])  # uniform prior: posterior ~ likelihood
            winners = np.flatnonzero(np.isclose(scores, scores.max()))
            for y in winners:
                recall[y] += scores[y] / len(winners)
        ua = float(recall.mean())
        ua = ua * (1.0 - label_noise) + (1.0 - ua) * label_noise / (k - 1)
        out[channel] = {"WA": ua, "UA": ua}  # balanced classes: WA = sum_k (1/K) recall_k = UA
    return out


def corpus_ceilings(synth: SynthConfig) -> dict[str, dict[str, float]]:
    """:func:`bayes_ceilings` of a corpus configuration (its cue probabilities and label noise)."""
    return bayes_ceilings(synth.p_lexical_cue, synth.p_vocal_cue, label_noise=synth.label_noise)


def noise_matrix(label_noise: float, k: int = len(CLASSES)) -> np.ndarray:
    """P(released label | expressed emotion) for symmetric label noise: rows sum to 1."""
    return (1.0 - label_noise) * np.eye(k) + label_noise / (k - 1) * (1.0 - np.eye(k))


def _check_probabilities(p_lexical: float, p_vocal: float, label_noise: float = 0.0, k: int = len(CLASSES)) -> None:
    for name, p in (("p_lexical", p_lexical), ("p_vocal", p_vocal)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    if (problem := _label_noise_problem(label_noise, k)) is not None:
        raise ValueError(problem)


def _label_noise_problem(label_noise: float, k: int) -> str | None:
    if 0.0 <= label_noise < 1.0 - 1.0 / k:
        return None
    return (f"label_noise must be in [0, {1 - 1 / k:g}) (beyond it a noisy label is more often another class "
            f"than the expressed one), got {label_noise}")


def oracle_channels(label: int, lexical_cue: bool, vocal_cue: bool, p_lexical: float, p_vocal: float,
                    classes: tuple[str, ...] = CLASSES, *, label_noise: float = 0.0) -> dict[str, tuple[np.ndarray, int]]:
    """What a perfect teacher of each channel knows about one utterance of this corpus.

    For ``"linguistic"`` (the words) and ``"prosodic"`` (the voice): the posterior over the
    classes given only what that channel shows (uniform prior, the generative design of
    :func:`bayes_ceilings`), and the index of that observation, a code for the channel's
    content: the words' ``0..K-1`` (a cue of that class) or ``K`` (filler); the voice's
    ``y`` (class y's delivery) or the neutral index (baseline, which neutral's delivery is).
    ``distill.teacher_targets = "oracle"`` distils from these instead of trained teachers:
    the most any teacher of either channel could pass on.

    ``label`` is the *expressed* emotion (``meta["expressed"]`` when the corpus has label noise);
    with ``label_noise`` the posterior is over the released label, :func:`noise_matrix` applied."""
    k = len(classes)
    _check_probabilities(p_lexical, p_vocal, label_noise, k)
    neutral = classes.index("neutral")
    shown = {"linguistic": f"cue:{label}" if lexical_cue else "filler",
             "prosodic": f"delivery:{label}" if vocal_cue and label != neutral else "baseline"}
    codes = {"linguistic": label if lexical_cue else k, "prosodic": neutral if shown["prosodic"] == "baseline" else label}
    tables = {"linguistic": [_text_likelihood(y, p_lexical) for y in range(k)],
              "prosodic": [_voice_likelihood(y, p_vocal, neutral) for y in range(k)]}
    out = {}
    for kind, table in tables.items():
        scores = np.array([likelihood.get(shown[kind], 0.0) for likelihood in table])
        out[kind] = ((scores / scores.sum()) @ noise_matrix(label_noise, k), codes[kind])
    return out


# -- the corpus on disk ------------------------------------------------------------------------


def _parameters(synth: SynthConfig) -> dict[str, Any]:
    """Everything that decides the corpus's bytes: its identity."""
    return {
        "generator_version": GENERATOR_VERSION,
        "espeak_ng": espeak.library_version(),
        "synth": _hashed_dict(synth),
        "speakers": [dataclasses.asdict(s) for s in SPEAKERS],
        "deliveries": {k: dataclasses.asdict(v) for k, v in DELIVERIES.items()},
        "jitter_sd": dataclasses.asdict(JITTER_SD),
        "reference_level_db": REFERENCE_LEVEL_DB,
        "text": {"fillers": FILLERS, "shared_slots": SHARED_SLOTS, "cues": LEXICAL_CUES,
                 "p_filler_before_cue": P_FILLER_BEFORE_CUE, "p_second_filler": P_SECOND_FILLER},
        "sample_rate": SAMPLE_RATE,
    }


def corpus_dir(synth: SynthConfig | None = None, root: Path | None = None) -> Path:
    """The corpus's folder: ``root / <key>``, ``root`` defaulting to ``<data>/synth``."""
    synth = synth or SynthConfig()
    base = Path(root) if root is not None else paths.data_dir() / "synth"
    return base / config_hash(_parameters(synth))


def card_path(synth: SynthConfig | None = None, root: Path | None = None) -> Path:
    """The corpus card (Markdown) of the corpus these parameters make (generate it first)."""
    return corpus_dir(synth, root) / CARD


#: Bytes before the samples in a file :func:`wav_bytes` writes (RIFF, fmt and data chunk headers).
_WAV_HEADER = 44


def _wav_size(n_samples: int) -> int:
    """Bytes of the file :func:`wav_bytes` writes for ``n_samples`` (16-bit mono)."""
    return _WAV_HEADER + 2 * n_samples


def _whole(path: Path, duration: float) -> bool:
    """True when the wav of a manifest row exists with the size its duration gives: one stat,
    so that a file cut or emptied after generation (a damaged copy of the data folder) is
    noticed before it is used, not when a model reads it."""
    try:
        return path.stat().st_size == _wav_size(round(duration * SAMPLE_RATE))
    except FileNotFoundError:
        return False


def _read_manifest(folder: Path, expected: int) -> list[Utterance] | None:
    """The ``expected`` utterances of a complete corpus, or None when it is incomplete (no manifest,
    a wav file missing or of the wrong size, or another number of rows than the design has: a
    manifest cut at a line's end by an interrupted copy or a full disk read as a corpus half the
    size, and the runs trained on the whole one were called stale; then generation resumes,
    renders the missing files again and rewrites the manifest)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    utterances = []
    with open(manifest, "rb") as f:  # decoded line by line: bytes that are not UTF-8 are named with their line
        for line_no, line in enumerate(f, 1):
            try:
                row = json.loads(line.decode("utf-8"))
                utt = Utterance(id=row["id"], label=row["label"], speaker=row["speaker"], session=row["session"],
                                path=folder / row["path"], text=row["text"], duration=row["duration"],
                                meta=row["meta"])
                whole = _whole(utt.path, utt.duration)
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
                raise CorpusError(f"{manifest}, line {line_no}: not a synth manifest row ({err!r}); "
                                  "delete the file to regenerate it") from err
            if not whole:
                return None
            utterances.append(utt)
    return utterances if len(utterances) == expected else None


def _utterance(plan: UtterancePlan, folder: Path, n_samples: int) -> Utterance:
    meta = {"lexical_cue": plan.lexical_cue, "vocal_cue": plan.vocal_cue, "gender": plan.gender, "voice": plan.voice}
    if plan.expressed is not None:  # only corpora with label noise record it: the others' manifests are unchanged
        meta["expressed"] = plan.expressed
    return Utterance(id=plan.id, label=plan.label, speaker=plan.speaker, session=plan.session,
                     path=folder / plan.relpath, text=plan.text, duration=n_samples / SAMPLE_RATE, meta=meta)


def _existing_samples(path: Path) -> int | None:
    """Samples of a finished wav, or None when it has to be rendered (again).

    Writes are atomic, so generation never leaves a torn file, but a copy of the data folder
    can (an interrupted rsync, a full disk): a damaged file counts as not rendered. The
    generator is deterministic, so rendering it again gives the bytes it should have held."""
    if not path.is_file():
        return None
    try:
        info = audio_info(path)  # the header, checked against the file's size (a cut file is refused)
    except AudioError:
        return None
    n = round(info.duration * SAMPLE_RATE)
    # every rendered utterance has speech in a 16 kHz mono file of exactly this size (bytes appended
    # would otherwise pass here and fail _read_manifest's size check after every generation)
    if n == 0 or (info.sample_rate, info.channels) != (SAMPLE_RATE, 1) or path.stat().st_size != _wav_size(n):
        return None
    return n


def generate(synth: SynthConfig | None = None, root: Path | None = None, progress: bool = True) -> Path:
    """Make the corpus (or finish a partial one) and return its folder. Existing wav files
    are reused unless damaged (rendered again, see :func:`_existing_samples`); the card, then
    the manifest are written last."""
    from ..progress import progress_bar

    synth = synth or SynthConfig()
    plans = plan_corpus(synth)
    folder = corpus_dir(synth, root)
    start = time.perf_counter()
    samples: dict[str, int] = {}
    todo = []
    for plan in plans:
        n = _existing_samples(folder / plan.relpath)
        if n is None:
            todo.append(plan)
        else:
            samples[plan.id] = n
    processes = synth.processes or available_cores()

    def rendered():
        if processes > 1 and len(todo) > 1:
            # fork, as espeak.synthesize does: this process never synthesises, so neither do the
            # workers' starting states, and no `if __name__ == "__main__"` guard is needed
            # chunks of 4 (as eGeMAPS's): a Ctrl-C waits for the chunks already handed out (forked_map),
            # at most a second; 75 utterances a chunk made it 4 s, for no measurable speed
            yield from zip(todo, forked_map(_render_one, [(p, folder / p.relpath) for p in todo], processes,
                                            f"synth corpus {folder}", chunksize=4))
        else:
            for plan in todo:
                yield plan, _render_to_file(plan, folder / plan.relpath)

    # a bar interactively, a start and an end line in batch runs (emolib.progress)
    desc = f"synth corpus {folder.name} ({len(todo)} utterances)"
    for plan, n in progress_bar(rendered(), total=len(todo), desc=desc, enabled=progress and bool(todo)):
        samples[plan.id] = n
    utterances = [_utterance(p, folder, samples[p.id]) for p in plans]
    atomic_write_text(folder / CARD, corpus_card(synth, plans, utterances))
    atomic_write_json(folder / "generation.json", {
        "seconds": round(time.perf_counter() - start, 2), "synthesised": len(todo),
        "reused": len(plans) - len(todo), "processes": processes,
    })
    lines = [json.dumps({"id": u.id, "label": u.label, "speaker": u.speaker, "session": u.session,
                         "path": p.relpath, "text": u.text, "duration": u.duration, "meta": u.meta})
             for p, u in zip(plans, utterances)]
    atomic_write_text(folder / MANIFEST, "\n".join(lines) + "\n")
    return folder


def load(synth: SynthConfig | None = None, root: Path | None = None, progress: bool = True) -> Corpus:
    """The built-in corpus for these parameters: read from its manifest when complete,
    otherwise generated (or finished) first. ``root`` is the folder holding synth corpora
    (default ``<data>/synth``, see :func:`emolib.paths.data_dir`)."""
    synth = synth or SynthConfig()
    _check(synth)
    folder = corpus_dir(synth, root)
    expected = corpus_size(synth)
    utterances = _read_manifest(folder, expected)
    if utterances is None:
        from ..runs import work_lock

        # two processes loading a corpus not made yet (two commands on one data folder): one makes it
        with work_lock(folder.with_name(f".{folder.name}.lock"), f"synth corpus {folder.name}"):
            if _read_manifest(folder, expected) is None:
                generate(synth, root, progress)
        utterances = _read_manifest(folder, expected)
        if utterances is None:  # files removed while generating (another process cleaning up?)
            raise CorpusError(f"{folder / MANIFEST}: generation finished but wav files are missing; call load() again")
    ceilings = corpus_ceilings(synth)
    notes = [
        "Synthetic: generated with espeak-ng (not human speech); see the corpus card "
        f"{folder / CARD}.",
        f"Words carry the label in about {synth.p_lexical_cue:.0%} of utterances, the voice in about "
        f"{synth.p_vocal_cue:.0%}, independently; Bayes ceilings (UA): text {ceilings['text']['UA']:.1%}, "
        f"voice {ceilings['voice']['UA']:.1%}, both {ceilings['both']['UA']:.1%}.",
    ]
    if synth.label_noise > 0:
        noisy = sum(1 for u in utterances if u.meta.get("expressed", u.label) != u.label)
        notes.append(f"Label noise {synth.label_noise:g}: {noisy} of {len(utterances)} labels differ from the emotion "
                     "the turn expresses (meta['expressed']); the ceilings above are against the released labels.")
    return Corpus(name="synth", utterances=utterances, classes=CLASSES, has_transcripts=True, has_audio=True,
                  root=folder, notes=notes)


# -- the corpus card ---------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _label_noise_line(synth: SynthConfig, plans: list[UtterancePlan]) -> str:
    if synth.label_noise <= 0:
        return "every label is the emotion the turn expresses (`label_noise=0`)."
    noisy = sum(1 for p in plans if p.expressed is not None and p.expressed != p.label)
    return (f"with probability {synth.label_noise:g} (`label_noise`) a turn is released with another class, drawn "
            f"uniformly, than the one its words and voice express, as annotators disagree: {noisy} of {len(plans)} "
            "turns here (`meta.expressed` records the expressed emotion).")


def corpus_card(synth: SynthConfig, plans: list[UtterancePlan], utterances: list[Utterance]) -> str:
    """The Markdown corpus card: sizes, counts, parameters, voices, ceilings, provenance."""
    durations = np.array([u.duration for u in utterances])
    ceilings = corpus_ceilings(synth)
    by = {key: sorted({getattr(p, key) for p in plans}) for key in ("speaker", "session")}

    def counts(key: str) -> list[list[Any]]:
        rows = []
        for value in by[key]:
            row = [value] + [sum(1 for p in plans if getattr(p, key) == value and p.label == c) for c in CLASSES]
            rows.append(row + [sum(row[1:])])
        return rows

    def share(flags: list[bool]) -> str:
        return f"{np.mean(flags):.1%}" if flags else "-"

    cue_rows = []
    for c in CLASSES:
        mine = [p for p in plans if p.label == c]
        cue_rows.append([c, len(mine), share([p.lexical_cue for p in mine]), share([p.vocal_cue for p in mine]),
                         share([p.lexical_cue and p.vocal_cue for p in mine])])
    examples = []
    for c in CLASSES:
        with_cue = [p.text for p in plans if p.label == c and p.lexical_cue][:2]
        examples.append(f"  - {c}: " + " / ".join(f'"{t}"' for t in with_cue))
    fillers = [p.text for p in plans if not p.lexical_cue][:4]
    speakers = [[s.id, s.session, s.gender, f"`{s.voice}`", s.pitch, s.range, s.rate, f"{s.level_db:+.1f}"]
                for s in SPEAKERS]
    deliveries = [[e, f"{d.pitch:+g}", f"{d.range:+g}", f"{d.rate:+.0%}", f"{d.level_db:+.1f}"]
                  for e, d in DELIVERIES.items()]
    j = JITTER_SD
    params = {f.name: getattr(synth, f.name) for f in dataclasses.fields(synth) if f.metadata.get("hash", True)}
    return f"""# The built-in corpus `synth` ({corpus_dir(synth).name})

A synthetic, IEMOCAP-shaped emotional speech corpus generated by `emolib.corpora.synth`
with espeak-ng {espeak.library_version()} (generator version {GENERATOR_VERSION}). It is not human speech: it stands
in for IEMOCAP where no real corpus is available, with two channels that each carry the
label only in part and independently, so that a model of both can beat a model of either.

## Size

- {len(utterances):,} utterances, {durations.sum() / 3600:.2f} hours, 16 kHz mono PCM16
- duration: median {np.median(durations):.2f} s, 95th percentile {np.percentile(durations, 95):.2f} s,
  shortest {durations.min():.2f} s, longest {durations.max():.2f} s
- {len(SPEAKERS)} speakers in {len(by['session'])} sessions (one female, one male voice each),
  {synth.utterances_per_speaker} utterances per speaker, classes balanced per speaker

Per session:

{_table(['session', *CLASSES, 'total'], counts('session'))}

Per speaker:

{_table(['speaker', *CLASSES, 'total'], counts('speaker'))}

## The two channels

Generation parameters: {', '.join(f'`{k}={v}`' for k, v in params.items())}.

- **Words**: with probability {synth.p_lexical_cue} the transcript carries a cue of its emotion
  ({' / '.join(f"{len(v['templates'][:synth.cue_templates or None])} {k}" for k, v in LEXICAL_CUES.items())}
  hand-written templates (`cue_templates`), filled from word lists; neutral's cue is a matter-of-fact sentence), otherwise one
  or two of {len(FILLERS)} emotion-free fillers shared by all classes. Examples:
{chr(10).join(examples)}
  - fillers: {' / '.join(f'"{t}"' for t in fillers)}
- **Voice**: with probability {synth.p_vocal_cue} the utterance is delivered with its emotion's change
  of the speaker's baseline, otherwise with the baseline (neutral's delivery is the baseline):

{_table(['emotion', 'pitch (espeak units)', 'range (espeak units)', 'rate', 'level (dB)'], deliveries)}

  Every utterance also gets jitter (standard deviations x {synth.jitter}): pitch {j.pitch:g}, range
  {j.range:g}, rate {j.rate:.0%}, level {j.level_db:g} dB. espeak-ng speaks every sentence with
  declarative punctuation, so that question marks cannot carry the words into the voice.
- Each utterance records `meta.lexical_cue` and `meta.vocal_cue` (drawn independently):

{_table(['class', 'utterances', 'lexical cue', 'vocal cue', 'both'], cue_rows)}

- Labels: {_label_noise_line(synth, plans)}
- Audio: {synth.silence_seconds[0]:g}-{synth.silence_seconds[1]:g} s of pause before and after each turn, white
  background noise at a random SNR of {synth.snr_db[0]:g}-{synth.snr_db[1]:g} dB.

## Bayes ceilings

The best any model can do, computed exactly from the design (`bayes_ceilings`: a present
cue names its class, a filler or a baseline delivery says nothing more, cues independent;
against the released labels, so label noise included). With balanced classes WA = UA.

{_table(['channel', 'WA', 'UA'], [[k, f'{v["WA"]:.2%}', f'{v["UA"]:.2%}'] for k, v in ceilings.items()])}

## Voices

{_table(['speaker', 'session', 'gender', 'espeak-ng voice', 'pitch', 'range', 'rate (wpm)', 'level (dB)'], speakers)}

## How it was made

`emolib.corpora.synth.load(SynthConfig(...))` (or `load_corpus("synth", synth=...)`): every random
choice is drawn from a generator seeded by (seed, speaker, index); espeak-ng synthesises at
22,050 Hz in a fresh child process per utterance (its internal state would otherwise make
each file depend on the ones before it), the audio is resampled to 16 kHz with soxr, given
its gain, pauses and noise, and written atomically; `manifest.jsonl` is written last.

## Licence

The transcripts and this card are part of emolib (MIT). espeak-ng (GPL-3.0, from the
`espeakng-loader` wheel) is only called at run time through its public C API; no espeak-ng
code or data is copied into emolib or into this folder.
"""
