"""emolib.audio: 16 kHz mono float32 reading, resampling, header probes and clear errors."""
import numpy as np
import pytest
import soundfile as sf

from emolib import audio
from emolib.audio import (
    SILENCE_PEAK, AudioError, AudioInfo, audio_info, is_silent, probe_corpus_file, read_audio, resample, write_wav,
)


def _sine(seconds, rate, freq=440.0, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_reads_16k_mono_as_float32(make_wav):
    x = _sine(0.25, 16000)
    path = make_wav("a.wav", data=x, subtype="FLOAT")
    y = read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and y.shape == (4000,)
    np.testing.assert_array_equal(y, x)


def test_pcm16_is_scaled_to_unit_range(make_wav):
    x = _sine(0.1, 16000, amp=0.5)
    y = read_audio(make_wav("a.wav", data=x, subtype="PCM_16"))
    assert np.max(np.abs(y - x)) <= 1 / 32768


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nothere\.wav: no such audio file"):
        read_audio(tmp_path / "nothere.wav")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(AudioError, match="not a file"):
        read_audio(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    with pytest.raises(AudioError, match=r"broken\.wav: unreadable audio file"):
        read_audio(path)
    with pytest.raises(AudioError, match=r"broken\.wav: unreadable audio file"):
        audio_info(path)


def test_git_lfs_pointer_is_named(tmp_path):
    path = tmp_path / "1001_DFA_ANG_XX.wav"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n")
    with pytest.raises(AudioError, match="git-lfs pointer file, not audio"):
        read_audio(path)


def test_empty_audio(make_wav):
    path = make_wav("empty.wav", data=np.zeros((0, 1), np.float32))
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio \(0 samples\)"):
        read_audio(path)


def test_silent_audio_is_an_error_unless_allowed(make_wav):
    path = make_wav("silent.wav", data=np.zeros(1600, np.float32))
    with pytest.raises(AudioError, match=r"silent\.wav: silent audio \(peak 0 below 0\.0001 of full scale\)"):
        read_audio(path)
    y = read_audio(path, allow_silent=True)
    assert y.shape == (1600,) and not y.any()


def test_is_silent_threshold():
    assert SILENCE_PEAK == 1e-4
    assert is_silent(np.full(10, 0.9e-4, np.float32))
    assert not is_silent(np.array([0.0, -1.1e-4], np.float32))
    assert is_silent(np.zeros(0, np.float32))


def test_nan_samples(make_wav):
    x = _sine(0.1, 16000)
    x[100] = np.nan
    path = make_wav("nan.wav", data=x, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN or infinite samples"):
        read_audio(path)


def test_infinite_samples(make_wav):
    x = _sine(0.1, 16000)
    x[5] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        read_audio(make_wav("inf.wav", data=x, subtype="FLOAT"))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_sample_rates_are_resampled(make_wav, rate):
    path = make_wav(f"r{rate}.wav", data=_sine(0.5, rate), sample_rate=rate, subtype="FLOAT")
    y = read_audio(path)
    assert y.shape == (8000,)  # 0.5 s at 16 kHz
    # the same tone, away from the filter's edge effects at both ends
    ref = _sine(0.5, 16000)
    assert np.max(np.abs(y[400:-400] - ref[400:-400])) < 2e-3


def test_resample_to_other_target_rate(make_wav):
    path = make_wav("a.wav", data=_sine(0.5, 16000), subtype="FLOAT")
    y = read_audio(path, sample_rate=8000)
    assert y.shape == (4000,)
    ref = _sine(0.5, 8000)  # the same tone at 8 kHz, away from the filter's edge effects
    assert np.max(np.abs(y[200:-200] - ref[200:-200])) < 2e-3


def test_resample_function_is_identity_at_same_rate():
    x = _sine(0.1, 16000)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    y = resample(_sine(1.0, 22050), 22050)  # the default target: the corpus's 16 kHz
    assert y.shape == (16000,) and y.dtype == np.float32
    assert np.max(np.abs(y[400:-400] - _sine(1.0, 16000)[400:-400])) < 2e-3


def test_stereo_is_downmixed_to_the_channel_mean(make_wav):
    left, right = _sine(0.2, 16000, 440.0, 0.5), _sine(0.2, 16000, 660.0, 0.25)
    path = make_wav("stereo.wav", data=np.stack([left, right], axis=1), subtype="FLOAT")
    y = read_audio(path)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


def test_stereo_48k_is_downmixed_and_resampled(make_wav):
    left, right = _sine(0.3, 48000, 440.0, 0.5), _sine(0.3, 48000, 660.0, 0.25)
    path = make_wav("s48.wav", data=np.stack([left, right], axis=1), sample_rate=48000, subtype="FLOAT")
    y = read_audio(path)
    assert y.shape == (4800,)
    ref = (_sine(0.3, 16000, 440.0, 0.5) + _sine(0.3, 16000, 660.0, 0.25)) / 2  # the channels' mean at 16 kHz
    assert np.max(np.abs(y[400:-400] - ref[400:-400])) < 2e-3


def test_max_seconds_keeps_the_start(make_wav):
    x = _sine(1.0, 16000)
    path = make_wav("long.wav", data=x, subtype="FLOAT")
    y = read_audio(path, max_seconds=0.25)
    np.testing.assert_array_equal(y, x[:4000])
    assert read_audio(make_wav("long48.wav", data=_sine(1.0, 48000), sample_rate=48000), max_seconds=0.25).shape == (4000,)
    assert read_audio(path, max_seconds=5.0).shape == (16000,)  # shorter clips are untouched


def test_bad_arguments(make_wav):
    path = make_wav()
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        read_audio(path, max_seconds=0)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        read_audio(path, sample_rate=0)


def test_audio_info_reads_the_header(make_wav):
    info = audio_info(make_wav("s.wav", seconds=0.1, sample_rate=48000, channels=2))
    assert info == AudioInfo(0.1, 48000, 2)
    duration, rate, channels = info
    assert (duration, rate, channels) == (0.1, 48000, 2)
    with pytest.raises(AudioError, match="no such audio file"):
        audio_info(make_wav().parent / "missing.wav")


def test_probe_corpus_file(make_wav, tmp_path):
    assert probe_corpus_file(make_wav("a.wav", seconds=0.5)) == AudioInfo(0.5, 16000, 1)
    assert probe_corpus_file(make_wav("header_only.wav", data=np.zeros((0, 1), np.float32))) is None
    (tmp_path / "zero.wav").write_bytes(b"")
    assert probe_corpus_file(tmp_path / "zero.wav") is None
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="unreadable"):
        probe_corpus_file(tmp_path / "junk.wav")


def test_write_wav_round_trip_is_16bit_pcm(tmp_path):
    x = _sine(0.2, 16000, amp=0.8)
    path = write_wav(tmp_path / "sub" / "out.wav", x)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 3200)
    assert np.max(np.abs(read_audio(path) - x)) <= 1 / 32768
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.wav"]  # no temporary file left


def test_write_wav_refuses_what_would_clip_or_corrupt(tmp_path):
    target = tmp_path / "out.wav"
    with pytest.raises(ValueError, match="exceeds full scale"):
        write_wav(target, np.array([0.5, 1.5], np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_wav(target, np.array([0.5, np.nan], np.float32))
    with pytest.raises(ValueError, match="mono 1-D"):
        write_wav(target, np.zeros((10, 2), np.float32))
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_truncated_wav_is_named_not_read_as_a_shorter_clip(make_wav):
    path = make_wav("cut.wav", seconds=1.0)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    message = r"cut\.wav: truncated: its header declares 32000 bytes of audio, the file holds 15978"
    for read in (audio_info, read_audio, probe_corpus_file):
        with pytest.raises(AudioError, match=message):
            read(path)


@pytest.mark.parametrize("fmt, suffix", [("AIFF", "aiff"), ("W64", "w64"), ("RF64", "rf64")])
def test_other_containers_cut_short_are_named_too(tmp_path, fmt, suffix):
    path = tmp_path / f"clip.{suffix}"
    sf.write(path, _sine(1.0, 16000), 16000, format=fmt, subtype="PCM_16")
    assert audio_info(path).duration == pytest.approx(1.0)  # whole: read as it is
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError, match=rf"clip\.{suffix}: truncated: its header declares \d+ bytes"):
        audio_info(path)


def test_a_streamed_wav_without_a_declared_length_is_read(make_wav):
    # writers that stream (ffmpeg to a pipe) leave the RIFF and data sizes at 0xFFFFFFFF
    path = make_wav("streamed.wav", seconds=0.5)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert len(read_audio(path)) == 8000 and audio_info(path).duration == pytest.approx(0.5)


def test_float_files_are_returned_as_stored(make_wav):
    loud = np.full(1600, 1.5, dtype=np.float32)
    assert np.all(read_audio(make_wav("loud.wav", data=loud, subtype="FLOAT")) == 1.5)


def test_stereo_channels_that_cancel_out_are_named_as_such(make_wav):
    tone = _sine(0.2, 16000)
    path = make_wav("inverted.wav", data=np.stack([tone, -tone], axis=1), subtype="FLOAT")
    with pytest.raises(AudioError, match=r"inverted\.wav: its 2 channels cancel out when averaged to mono"):
        read_audio(path)


# -- cut compressed files and unfinalised headers: named, not read as shorter or empty clips ------

COMPRESSED = {"mp3": {"format": "MP3"}, "opus": {"format": "OGG", "subtype": "OPUS"},
              "vorbis": {"format": "OGG", "subtype": "VORBIS"}}


def _compressed(tmp_path, kind, name="whole"):
    """A 3 s 16 kHz tone in a compressed format: 48,000 samples, every one of them decoded."""
    path = tmp_path / f"{name}.{kind}"
    sf.write(path, _sine(3.0, 16000), 16000, **COMPRESSED[kind])
    return path


def _cut(path, fraction, name):
    whole = path.read_bytes()
    cut = path.with_name(name)
    cut.write_bytes(whole[: int(len(whole) * fraction)])
    return cut


@pytest.mark.parametrize("kind", sorted(COMPRESSED))
def test_whole_compressed_files_read_every_sample(tmp_path, kind):
    path = _compressed(tmp_path, kind)
    assert audio_info(path) == AudioInfo(3.0, 16000, 1) == probe_corpus_file(path)
    assert read_audio(path).shape == (48000,)


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.95])
def test_a_cut_mp3_is_named_when_read(tmp_path, fraction):
    cut = _cut(_compressed(tmp_path, "mp3"), fraction, "cut.mp3")
    message = r"cut\.mp3: truncated: its header promises 48000 samples, only \d+ decode \(an interrupted copy"
    with pytest.raises(AudioError, match=message):
        read_audio(cut)
    # the limit the module docstring names: an MP3's header (its Xing frame) still says 3 s
    assert audio_info(cut) == AudioInfo(3.0, 16000, 1)


def test_the_intact_start_of_a_cut_mp3_is_read(tmp_path):
    cut = _cut(_compressed(tmp_path, "mp3"), 0.5, "cut.mp3")
    assert read_audio(cut, max_seconds=0.5).shape == (8000,)  # only that much is decoded, and it is there
    with pytest.raises(AudioError, match=r"only \d+ of the first 40000 asked for decode"):
        read_audio(cut, max_seconds=2.5)


@pytest.mark.parametrize("kind, fraction", [("opus", 0.5), ("opus", 0.8), ("opus", 0.95),
                                            ("vorbis", 0.8), ("vorbis", 0.95)])
def test_a_cut_ogg_file_is_named_by_every_reader(tmp_path, kind, fraction):
    # libsndfile reads a cut Opus file as a shorter clip, a cut Vorbis file as 0 samples ("empty")
    cut = _cut(_compressed(tmp_path, kind), fraction, f"cut.{kind}")
    message = rf"cut\.{kind}: truncated: its last Ogg page is cut off \(an interrupted copy\? copy the file again\)"
    for read in (audio_info, read_audio, probe_corpus_file):
        with pytest.raises(AudioError, match=message):
            read(cut)


@pytest.mark.parametrize("kind", ["opus", "vorbis"])
def test_an_ogg_file_cut_between_pages_is_named(tmp_path, kind):
    whole = _compressed(tmp_path, kind).read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(whole[: whole.rindex(b"OggS")])  # every page whole, the end-of-stream one missing
    for read in (audio_info, read_audio, probe_corpus_file):
        with pytest.raises(AudioError, match=rf"cut\.{kind}: truncated: its last Ogg page does not end the stream"):
            read(cut)


def _ogg_crc(page: bytes) -> int:
    """The Ogg page checksum (RFC 3533): CRC-32, polynomial 0x04C11DB7, not reflected, initial 0."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def test_a_whole_vorbis_file_whose_writer_never_flagged_the_end_is_read(tmp_path):
    # Android's OggWriter, Telegram voice notes and MuseScore leave the end-of-stream flag unset
    data = bytearray(_compressed(tmp_path, "vorbis").read_bytes())
    last = data.rindex(b"OggS")
    assert data[last + 5] & 0x04
    data[last + 5] &= ~0x04
    data[last + 22 : last + 26] = bytes(4)
    data[last + 22 : last + 26] = _ogg_crc(bytes(data[last:])).to_bytes(4, "little")
    path = tmp_path / "no_eos.ogg"
    path.write_bytes(bytes(data))
    assert audio_info(path) == AudioInfo(3.0, 16000, 1) == probe_corpus_file(path)
    assert read_audio(path).shape == (48000,)


def _mp3_without_its_info_frame(tmp_path, tag_bytes: int):
    """A constant-bit-rate MP3 (4 s at 44.1 kHz) whose first frame, LAME's Info frame that states
    the length, is removed, with an ID3v2 tag of ``tag_bytes`` in front (a title, cover art):
    libsndfile then estimates the length from the file's size, tag included."""
    whole = tmp_path / "cbr.mp3"
    sf.write(whole, _sine(4.0, 44100), 44100, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5)
    data = whole.read_bytes()
    second = data.index(b"\xff\xfb", 1)
    assert b"Info" in data[:second]
    size = bytes((tag_bytes >> shift) & 0x7F for shift in (21, 14, 7, 0))  # syncsafe
    path = tmp_path / "tagged.mp3"
    path.write_bytes(b"ID3\x04\x00\x00" + size + bytes(tag_bytes) + data[second:])
    return whole, path


def test_an_mp3_that_states_no_length_is_not_called_cut(tmp_path):
    whole, tagged = _mp3_without_its_info_frame(tmp_path, 2048)
    assert audio._mp3_has_frame_count(whole) and not audio._mp3_has_frame_count(tagged)
    assert sf.info(str(tagged)).frames > 4.0 * 44100 + 1152  # the estimate counts the tag as audio
    wave = read_audio(tagged)  # not "truncated": the count was never a promise
    assert abs(len(wave) / 16000 - 4.0) < 0.06  # every frame but the removed one


def test_empty_ogg_audio_is_still_empty(tmp_path):
    path = tmp_path / "empty.ogg"
    sf.write(path, np.zeros((0, 1), np.float32), 16000, format="OGG", subtype="VORBIS")
    assert path.stat().st_size > 3000  # Vorbis headers alone: size does not tell an empty file from a cut one
    assert probe_corpus_file(path) is None
    with pytest.raises(AudioError, match=r"empty\.ogg: empty audio \(0 samples\)"):
        read_audio(path)


@pytest.mark.parametrize("riff_size_too", [False, True])
def test_a_wav_whose_header_was_never_finalised_is_named(make_wav, riff_size_too):
    # a recorder writes sizes of 0 first and fills them in when it stops; killed, it never does
    path = make_wav("unfinished.wav", seconds=0.5)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = bytes(4)
    if riff_size_too:
        data[4:8] = bytes(4)
    path.write_bytes(bytes(data))
    message = r"unfinished\.wav: header not finalised: its data chunk declares 0 bytes of audio, 16000 bytes follow it"
    for read in (audio_info, read_audio, probe_corpus_file):
        with pytest.raises(AudioError, match=message):
            read(path)


def test_an_empty_wav_with_an_id3_tag_or_stray_bytes_after_its_data_is_still_empty(make_wav):
    for name, extra in (("tagged.wav", b"TAG" + bytes(125)), ("stray.wav", bytes(100))):
        path = make_wav(name, data=np.zeros((0, 1), np.float32))
        path.write_bytes(path.read_bytes() + extra)
        assert probe_corpus_file(path) is None
        with pytest.raises(AudioError, match=rf"{name.replace('.', chr(92) + '.')}: empty audio \(0 samples\)"):
            read_audio(path)


def test_an_empty_wav_with_a_chunk_after_its_data_is_still_empty(make_wav):
    # writers may put metadata after the audio: with 0 bytes of audio that is not an unfinished header
    path = make_wav("empty.wav", data=np.zeros((0, 1), np.float32))
    data = bytearray(path.read_bytes()) + b"LIST" + (12).to_bytes(4, "little") + b"INFOISFT\0\0\0\0"
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert probe_corpus_file(path) is None
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio \(0 samples\)"):
        read_audio(path)
