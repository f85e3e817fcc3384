"""Speech loading: rates, channels, formats, frames, chunks, TIMIT's layout, splits and errors."""

from __future__ import annotations

import numpy as np
import pytest
from datakit import tone, write_audio

from model.data import DataError, chunk_audio, frames_from_audio, load_audio, load_speech_corpus, load_speech_file


def _peak_hz(wave: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 16_000])
def test_any_rate_becomes_16k_with_the_tone_kept(tmp_path, rate):
    path = write_audio(tmp_path / f"a{rate}.wav", tone(rate, 1.0, 440.0), rate)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16_000) <= 1
    assert abs(_peak_hz(wave) - 440.0) < 2.0
    # Amplitude survives resampling (away from the edges, where the filter starts up).
    assert abs(np.abs(wave[2000:-2000]).max() - 0.5) < 0.01


def test_resampling_filters_instead_of_dropping_samples(tmp_path):
    # 12 kHz is above the new Nyquist (8 kHz): a real resampler removes it; keeping every n-th sample
    # would fold it down to an audible 4 kHz tone.
    path = write_audio(tmp_path / "high.wav", tone(48_000, 0.5, 12_000.0), 48_000)
    wave = load_audio(path)
    assert np.sqrt(np.mean(wave[1000:-1000] ** 2)) < 0.01
    naive = tone(48_000, 0.5, 12_000.0)[::3]
    assert np.sqrt(np.mean(naive**2)) > 0.3  # what dropping samples would have given


def test_stereo_is_mixed_down(tmp_path):
    left, right = tone(16_000, 0.5, 440.0, 0.4), tone(16_000, 0.5, 440.0, 0.2)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), 16_000)
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-4)


def test_flac_and_bytes_and_subtypes(tmp_path):
    wave = tone(16_000, 0.3)
    flac = write_audio(tmp_path / "x.flac", wave, 16_000)
    pcm24 = write_audio(tmp_path / "x24.wav", wave, 16_000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(flac), wave, atol=1e-4)
    np.testing.assert_allclose(load_audio(pcm24.read_bytes()), wave, atol=1e-5)


def test_frames_and_chunks():
    wave = np.arange(1050, dtype=np.float32)
    frames = frames_from_audio(wave)
    assert frames.shape == (5, 200)
    np.testing.assert_array_equal(frames[1], wave[200:400])  # consecutive samples, in order
    chunks = chunk_audio(np.zeros(8000 * 2 + 100, np.float32), 8000)
    assert [c.shape for c in chunks] == [(40, 200), (40, 200)]
    with pytest.raises(DataError, match="multiple of 200"):
        chunk_audio(wave, 8050)
    with pytest.raises(DataError, match="1-D"):
        frames_from_audio(np.zeros((10, 2)))


def test_load_speech_file_errors(tmp_path):
    short = write_audio(tmp_path / "short.wav", tone(16_000, 0.005), 16_000)
    with pytest.raises(DataError, match=r"short\.wav: shorter than one frame"):
        load_speech_file(short)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(DataError, match=r"garbage\.wav: not a readable audio file"):
        load_speech_file(garbage)


def _folder(tmp_path, n=20, seconds=1.2):
    rng = np.random.default_rng(0)
    for i in range(n):
        rate = (8_000, 16_000, 22_050, 44_100)[i % 4]
        sub = tmp_path / "corpus" / f"spk{i % 3}"
        ext = "flac" if i % 5 == 0 else "wav"
        wave = (0.1 * rng.standard_normal(round(rate * seconds)) + 0.05).astype(np.float32)
        write_audio(sub / f"u{i:02d}.{ext}", wave, rate)
    return tmp_path / "corpus"


def test_corpus_chunks_splits_and_stats(tmp_path):
    root = _folder(tmp_path)
    c = load_speech_corpus(root)
    assert c.modality == "speech" and not c.predefined_split
    # 1.2 s per file -> two 0.5 s chunks of 40 frames each.
    assert all(x.shape == (40, 200) and x.dtype == np.float32 for s in ("train", "valid", "test") for x in c.split(s))
    sizes = {s: len(c.split(s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 36, "valid": 2, "test": 2}  # files 18/1/1, two chunks each
    # Splits are over files: no file has chunks in two splits.
    files = {s: {n.split("#")[0] for n in c.names[s]} for s in ("train", "valid", "test")}
    assert not (files["train"] & files["valid"]) and not (files["train"] & files["test"])
    assert not (files["valid"] & files["test"])
    # Stats come from the training split only, and normalise it to mean 0, std 1.
    train_raw = np.concatenate([c.stats.denormalise(x) for x in c.train])
    assert c.stats.mean == pytest.approx(float(train_raw.mean()), abs=1e-5)
    assert c.stats.std == pytest.approx(float(train_raw.std()), rel=1e-4)
    all_train = np.concatenate(c.train)
    assert abs(all_train.mean()) < 1e-4 and abs(all_train.std() - 1) < 1e-3
    summary = c.summary()
    assert summary["split_sizes"] == sizes and summary["normalisation"]["modality"] == "speech"


def test_corpus_is_deterministic_and_seeded(tmp_path):
    root = _folder(tmp_path)
    a, b = load_speech_corpus(root), load_speech_corpus(root)
    assert a.names == b.names
    assert all(np.array_equal(x, y) for x, y in zip(a.train, b.train, strict=True))
    other = load_speech_corpus(root, seed=1)
    assert other.names["test"] != a.names["test"]


def test_whole_files_without_chunking(tmp_path):
    root = _folder(tmp_path, n=4, seconds=0.7)
    c = load_speech_corpus(root, chunk_seconds=None)
    assert sorted(len(x) for s in ("train", "valid", "test") for x in c.split(s)) == [56] * 4  # 0.7 s = 56 frames


def test_timit_layout_gives_predefined_splits(tmp_path):
    root = tmp_path / "TIMIT"
    for split, n in (("TRAIN", 20), ("TEST", 4)):
        for i in range(n):
            # TIMIT's .WAV files are NIST SPHERE inside.
            write_audio(root / split / "DR1" / f"SPK{i}" / "SA1.WAV", tone(16_000, 0.6, 300 + i), 16_000, format="NIST")
    (root / "DOC").mkdir()
    c = load_speech_corpus(root)
    assert c.predefined_split
    assert all(n.startswith("TEST") for n in c.names["test"]) and len(c.test) == 4
    assert all(n.startswith("TRAIN") for n in c.names["train"] + c.names["valid"])
    assert len(c.valid) == 1 and len(c.train) == 19


def test_empty_folder_names_folder_and_extensions(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no audio")
    with pytest.raises(DataError) as e:
        load_speech_corpus(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value) and ".wav" in str(e.value) and ".flac" in str(e.value)
    with pytest.raises(DataError, match="no such file or folder"):
        load_speech_corpus(tmp_path / "missing")


def test_bad_files_are_skipped_with_a_count(tmp_path):
    root = _folder(tmp_path, n=6)
    (root / "broken.wav").write_bytes(b"\x00" * 100)
    write_audio(root / "tiny.wav", tone(16_000, 0.1), 16_000)  # shorter than a chunk
    with pytest.warns(UserWarning, match=r"skipped 2 of 8 files") as w:
        c = load_speech_corpus(root)
    assert "broken.wav" in str(w[0].message)
    assert sorted(name for name, _ in c.skipped) == ["broken.wav", "tiny.wav"]
    assert c.summary()["skipped_files"] == 2


def test_nothing_usable_is_an_error(tmp_path):
    for i in range(3):
        (tmp_path / f"b{i}.wav").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"none of the 3 audio files could be used"):
        load_speech_corpus(tmp_path)
