"""Teachers: the ResNet's shapes and masking, learning a separable toy set, resuming a killed
run exactly, the cache reused, a local save_pretrained text model, refusal without transcripts."""
import json
import re

import numpy as np
import pytest
import torch

from emolib import pipeline, prosody, train
from emolib.config import get_config
from emolib.pretrained import ModelError
from emolib.corpora import Corpus, Utterance
from emolib.runs import StaleRunError
from emolib.teachers import LinguisticTeacher, LLDDataset, ProsodicResNet, collate_lld, load_text_encoder

from toy import toy_data


@pytest.fixture
def roots(tmp_path, monkeypatch):
    for var in ("RUNS", "CACHE", "DATA"):
        monkeypatch.setenv(f"EMOLIB_{var}", str(tmp_path / var.lower()))
    return tmp_path


def _cfg(**overrides):
    base = {"training.progress": "none", "prosodic_teacher.optim.epochs": 15, "prosodic_teacher.optim.lr": 1e-2,
            "prosodic_teacher.crop_frames": 40, "linguistic_teacher.optim.epochs": 15,
            "linguistic_teacher.optim.lr": 3e-3}
    return get_config("tiny", {**base, **overrides})


def test_resnet_shapes_and_padding_invariance():
    cfg = get_config("tiny").prosodic_teacher
    model = ProsodicResNet(25, 4, cfg).eval()
    torch.manual_seed(0)
    a, b = torch.randn(37, 25), torch.randn(80, 25)
    batch = collate_lld([(a, 0), (b, 1)])
    assert batch["lld"].shape == (2, 80, 25) and batch["lld_mask"].sum().item() == 117
    out = model(batch)
    assert out["logits"].shape == (2, 4) and out["embedding"].shape == (2, cfg.embedding_dim)
    alone = model(collate_lld([(a, 0)]))
    # the short utterance's output is the same alone and padded to 80 frames in a batch
    torch.testing.assert_close(out["logits"][0], alone["logits"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["embedding"][0], alone["embedding"][0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="descriptors"):
        model({"lld": torch.zeros(1, 10, 24), "lld_mask": torch.ones(1, 10, dtype=torch.bool)})


def test_prosodic_teacher_learns_separable_toy_set_and_writes_results(roots):
    data = toy_data(roots / "toy", per_class=4)
    cfg = _cfg()
    run = pipeline.train_teacher("prosodic", cfg, 1, data, verbose=False)
    m = run.metrics()
    assert run.is_complete() and m["ua"] >= 0.75, m
    for name in ("config.json", "best.safetensors", "history.csv", "predictions.csv", "outputs.safetensors"):
        assert run.path(name).is_file(), name
    assert not run.path("resume.pt").exists()
    ids, outputs = pipeline.load_outputs(run)
    assert ids == data.corpus.ids and outputs["logits"].shape == (len(ids), 4)
    assert outputs["embedding"].shape == (len(ids), cfg.prosodic_teacher.embedding_dim)
    # the saved outputs (the students' targets) are the selected model's: its test predictions and UA follow from them
    pred = run.predictions()
    assert list(pred["id"]) == list(data.fold(1).test_ids)
    classes = data.corpus.classes
    logits = torch.from_numpy(outputs["logits"][[ids.index(u) for u in pred["id"]]]).double()
    np.testing.assert_allclose(pred[[f"p_{c}" for c in classes]].to_numpy(), torch.softmax(logits, -1).numpy(),
                               atol=1e-6)
    assert list(pred["pred"]) == [classes[k] for k in logits.argmax(-1).tolist()]
    recalls = [np.mean(pred["pred"][pred["label"] == c] == c) for c in classes]
    assert m["ua"] == pytest.approx(np.mean(recalls)) and m["wa"] == pytest.approx(np.mean(pred["pred"] == pred["label"]))
    # reused, not retrained
    assert pipeline.train_teacher("prosodic", cfg, 1, data, verbose=False).metrics() == m
    assert json.loads(run.path("corpus.json").read_text()) == {**data.corpus_record, "models": {}}
    # the same config on a relabelled corpus (a manifest edited in place) is not reused
    relabelled = data.corpus.utterances[0]
    label = relabelled.label
    relabelled.label = "happy" if relabelled.label != "happy" else "sad"
    edited = pipeline.Data(data.corpus, data.folds)
    with pytest.raises(StaleRunError, match=r"trained on another version of corpus 'toy'"):
        pipeline.train_teacher("prosodic", cfg, 1, edited, verbose=False)
    # nor when a clip is rewritten in place with as many bytes (loudness-normalised, denoised): its audio digest
    relabelled.label = label
    assert run.is_complete() and "audio" in data.corpus_record
    clip = relabelled.path.read_bytes()
    relabelled.path.write_bytes(clip[:44] + bytes(b ^ 1 for b in clip[44:]))
    with pytest.raises(StaleRunError, match=r"trained on other audio of corpus 'toy' .*the same names and sizes"):
        pipeline.train_teacher("prosodic", cfg, 1, pipeline.Data(data.corpus, data.folds), verbose=False)


@pytest.mark.parametrize("normalise", ["fold", "speaker"])
def test_prosodic_inputs_are_normalised_on_training_speakers_or_per_speaker(roots, normalise):
    data = toy_data(roots / "toy", sessions=3, per_class=2)
    fold = data.fold(1)
    cfg = _cfg(**{"prosodic_teacher.normalise": normalise})
    make, _ = pipeline._prosodic_datasets(cfg, data, fold)
    raw = prosody.features([(u.id, u.path) for u in data.corpus], "lld", progress=False)
    speaker_of = {u.id: u.speaker for u in data.corpus}
    loudness = prosody.LLD_NAMES.index("Loudness_sma3")  # defined on every frame (not voiced-only)

    def loudness_of(ids):  # the loudness column of every frame the teacher would read, and the raw frames
        ready = make(ids, None).arrays
        return np.concatenate([r[:, loudness] for r in ready]), np.concatenate([raw[i][:, loudness] for i in ids])

    if normalise == "fold":  # one set of statistics, the training speakers': only they come out at mean 0, std 1
        z, x_train = loudness_of(list(fold.train_ids))
        assert z.mean() == pytest.approx(0.0, abs=1e-4) and z.std() == pytest.approx(1.0, rel=1e-3)
        z, x = loudness_of(list(fold.test_ids))  # test speakers: scaled with the training speakers' statistics
        np.testing.assert_allclose(z, (x - x_train.mean()) / x_train.std(), rtol=1e-3, atol=1e-4)
        assert z.mean() != pytest.approx(0.0, abs=1e-2)
    else:  # every speaker, held-out ones too, at mean 0 and std 1 over all of their own turns (no labels used)
        for speaker in sorted(set(speaker_of.values())):
            z, x = loudness_of([u for u, s in speaker_of.items() if s == speaker])
            assert z.mean() == pytest.approx(0.0, abs=1e-4) and z.std() == pytest.approx(1.0, rel=1e-3), speaker
            np.testing.assert_allclose(z, (x - x.mean()) / x.std(), rtol=1e-3, atol=1e-4)
    # the fold's statistics stay the default, and at the default the teacher's hash is what it was before the option
    base = get_config("default")
    assert base.prosodic_teacher.normalise == "fold" and "normalise" not in base.to_dict_hashed()["prosodic_teacher"]
    assert cfg.to_dict_hashed()["prosodic_teacher"].get("normalise") == (None if normalise == "fold" else "speaker")


def test_lld_cache_reused_on_second_call(roots, monkeypatch):
    data = toy_data(roots / "toy", sessions=3, per_class=1)
    items = pipeline.audio_items(data.corpus)
    first = prosody.features(items, "lld", progress=False, processes=1)
    monkeypatch.setattr(prosody, "extract", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    second = prosody.features(items, "lld", progress=False, processes=1)
    for uid, _ in items:
        np.testing.assert_array_equal(first[uid], second[uid])
        assert first[uid].shape[1] == 25


def test_killed_teacher_run_resumes_to_the_same_result(roots, kill_after_epoch):
    data = toy_data(roots / "toy", per_class=2)
    cfg = _cfg(**{"prosodic_teacher.optim.epochs": 4})
    reference = pipeline.train_teacher("prosodic", cfg, 2, data, verbose=False)
    ref_metrics, ref_hist = reference.metrics(), reference.history()
    import shutil

    shutil.rmtree(reference.dir.parent.parent)

    killer = kill_after_epoch(2)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_teacher("prosodic", cfg, 2, data, verbose=False)
    run = pipeline.teacher_run("prosodic", cfg, 2)
    assert killer.calls == 2 and run.is_partial() and run.path("resume.pt").is_file()
    killer.disarm()
    resumed = pipeline.train_teacher("prosodic", cfg, 2, data, verbose=False)
    hist = resumed.history()
    assert list(hist["epoch"]) == [1, 2, 3, 4]
    np.testing.assert_array_equal(hist["train_loss"], ref_hist["train_loss"])
    assert resumed.metrics()["ua"] == ref_metrics["ua"] and resumed.metrics()["confusion"] == ref_metrics["confusion"]


def test_linguistic_teacher_from_local_save_pretrained_dir_learns_toy_words(roots):
    tokenizer, encoder = load_text_encoder("tiny-random", seed=0)
    local = roots / "my-bert"
    tokenizer.save_pretrained(local)
    encoder.save_pretrained(local)
    data = toy_data(roots / "toy", per_class=4)
    cfg = _cfg(**{"linguistic_teacher.model": str(local), "linguistic_teacher.freeze_embeddings": False})
    run = pipeline.train_teacher("linguistic", cfg, 1, data, verbose=False)
    m = run.metrics()
    assert m["ua"] >= 0.75, m
    assert m["embedding_dim"] == 32
    assert json.loads(run.path("config.json").read_text())["linguistic_teacher"]["model"] == str(local)


def test_frozen_word_embeddings_are_not_trained():
    cfg = get_config("tiny").linguistic_teacher
    _, encoder = load_text_encoder("tiny-random")
    model = LinguisticTeacher(encoder, 4, cfg)
    assert not model.encoder.get_input_embeddings().weight.requires_grad
    assert any(p.requires_grad for p in model.encoder.encoder.parameters())


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_linguistic_teacher_s_embedding_ignores_the_padding_of_a_batch(pooling):
    import dataclasses

    from emolib.teachers import TextDataset, make_text_collate

    cfg = dataclasses.replace(get_config("tiny").linguistic_teacher, pooling=pooling)
    tokenizer, encoder = load_text_encoder("tiny-random", seed=0)
    model = LinguisticTeacher(encoder, 4, cfg).eval()
    ds = TextDataset(["so happy", "this is a much longer sentence about a sad day at work"], [3, 2], tokenizer, 32)
    assert len(ds[0][0]) < len(ds[1][0])
    collate = make_text_collate(tokenizer.pad_token_id)
    with torch.no_grad():
        both, alone = model(collate([ds[0], ds[1]])), model(collate([ds[0]]))
        hidden = model.encoder(**{k: v for k, v in collate([ds[0]]).items() if k != "labels"}).last_hidden_state[0]
    torch.testing.assert_close(both["embedding"][0], alone["embedding"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both["logits"][0], alone["logits"][0], atol=1e-5, rtol=1e-5)
    # what each pooling is: the first token's state, or the mean over the real tokens
    expected = hidden[0] if pooling == "cls" else hidden.mean(0)
    torch.testing.assert_close(alone["embedding"][0], expected, atol=1e-6, rtol=1e-6)
    assert alone["embedding"].shape == (1, model.embedding_dim)


def test_linguistic_teacher_refuses_corpus_without_transcripts(roots):
    corpus = Corpus("ravdess-like", [Utterance(id=f"u{i}", label="neutral", speaker=f"A{i % 4}",
                                               session=f"A{i % 4}") for i in range(8)],
                    has_transcripts=False, notes=["Two fixed sentences carry no emotion signal.", "Four classes."],
                    why_no_transcripts="two fixed sentences carry no emotion signal.")
    data = pipeline.Data(corpus, pipeline.make_folds(corpus, "session", validation_speakers=1))
    with pytest.raises(ValueError) as raised:
        pipeline.train_teacher("linguistic", get_config("tiny"), 1, data)
    # the reason, and none of the corpus's other notes
    assert str(raised.value) == ("the linguistic teacher cannot be trained on corpus 'ravdess-like': "
                                 "two fixed sentences carry no emotion signal.")


def test_bf16_autocast_path_runs_on_cpu(roots):
    data = toy_data(roots / "toy", sessions=3, per_class=1)
    base = {"prosodic_teacher.optim.epochs": 1}
    fp32 = pipeline.train_teacher("prosodic", _cfg(**base), 1, data, verbose=False)
    run = pipeline.train_teacher("prosodic", _cfg(**base, **{"training.precision": "bf16"}), 1, data, verbose=False)
    assert run.is_complete() and run.dir != fp32.dir
    # autocast really ran in bfloat16 (8-bit mantissa): the loss moves, but only a little
    l16, l32 = run.history()["train_loss"][0], fp32.history()["train_loss"][0]
    assert np.isfinite(l16) and l16 != l32 and l16 == pytest.approx(l32, abs=0.05)
    # the outputs kept as the students' targets are computed in fp32, not rounded to bf16's 8 bits
    _, outputs = pipeline.load_outputs(run)
    for name in ("logits", "embedding"):
        values = torch.from_numpy(np.asarray(outputs[name], dtype=np.float32))
        assert not torch.equal(values.to(torch.bfloat16).float(), values), name
    with pytest.raises(ValueError, match="precision"):
        train.autocast(torch.device("cpu"), "fp16")


def test_time_masks_reach_every_frame_and_the_descriptor_band_every_descriptor():
    # a mask of up to 3 frames on a 10-frame map must be able to cover the first and the last frame
    x = np.ones((10, 25), np.float32)
    data = LLDDataset([x], [0], seed=0, time_masks=1, time_mask_frames=3, descriptor_mask=2)
    masked_frames, masked_descriptors = np.zeros(10, bool), np.zeros(25, bool)
    for epoch in range(400):
        data.set_epoch(epoch)
        m = data[0][0].numpy()
        masked_frames |= (m == 0).all(axis=1)
        masked_descriptors |= (m == 0).all(axis=0)
    assert masked_frames.all() and masked_descriptors.all()


def test_a_mistyped_local_model_directory_is_named_not_sent_to_the_hub(tmp_path):
    for name in (str(tmp_path / "no such dir"), "./no-such-dir", "~/no-such-emolib-dir"):
        with pytest.raises(FileNotFoundError, match=f"{re.escape(name)}: no such model directory"):
            load_text_encoder(name)
    from emolib.backbones import load_backbone

    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_backbone(str(tmp_path / "hubert"))


def test_a_local_text_model_saved_again_is_not_reused_silently(roots):
    # the config names the folder, not the weights in it: the run records their digest
    data = toy_data(roots / "toy", sessions=3, per_class=1)
    folder = roots / "my bert"

    def save(seed):
        tokenizer, encoder = load_text_encoder("tiny-random", seed=seed)
        tokenizer.save_pretrained(folder)
        encoder.save_pretrained(folder)

    save(0)
    cfg = _cfg(**{"linguistic_teacher.model": str(folder), "linguistic_teacher.optim.epochs": 1})
    run = pipeline.train_teacher("linguistic", cfg, 1, data, verbose=False)
    record = json.loads(run.path("corpus.json").read_text())
    assert list(record["models"]) == ["linguistic_teacher.model"]
    assert pipeline.train_teacher("linguistic", cfg, 1, data, verbose=False).dir == run.dir  # unchanged: reused
    save(1)
    with pytest.raises(StaleRunError, match=r"trained on other weights of linguistic_teacher.model .*saved again"):
        pipeline.train_teacher("linguistic", cfg, 1, data, verbose=False)


def test_a_text_model_saved_in_half_precision_loads_as_fp32_weights(roots):
    tokenizer, encoder = load_text_encoder("tiny-random", seed=0)
    local = roots / "my-bert-fp16"
    tokenizer.save_pretrained(local)
    encoder.half().save_pretrained(local)
    _, loaded = load_text_encoder(str(local))
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


def test_a_text_model_folder_without_its_encoder_weights_is_refused(roots):
    # a checkpoint whose weights have other names (another architecture's) gave a random encoder in silence;
    # BERT's pooler, which the teachers never use and sentence-transformers folders lack, may be missing
    import safetensors.torch

    tokenizer, encoder = load_text_encoder("tiny-random", seed=0)
    local = roots / "my-bert-renamed"
    tokenizer.save_pretrained(local)
    encoder.save_pretrained(local)
    assert not any(k.startswith("pooler.") for k in safetensors.torch.load_file(local / "model.safetensors"))
    load_text_encoder(str(local))  # no pooler: loads
    weights = safetensors.torch.load_file(local / "model.safetensors")
    safetensors.torch.save_file({f"roberta.{k}": v for k, v in weights.items()}, local / "model.safetensors",
                                metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"my-bert-renamed: the saved weights do not fit the BertModel .*"
                                         r"are not in the checkpoint .*they would start random"):
        load_text_encoder(str(local))


def test_a_speech_model_as_the_linguistic_teacher_and_a_text_model_as_the_backbone_are_refused(roots):
    # each was a traceback: the HuBERT folder's CTC "tokenizer" failed with a TypeError, the BERT folder ended in two
    # chained OSErrors about a feature extractor
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from emolib.backbones import load_backbone

    speech = roots / "hubert-tiny"
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                             num_conv_pos_embedding_groups=2)).save_pretrained(speech)
    Wav2Vec2FeatureExtractor().save_pretrained(speech)
    with pytest.raises(ModelError, match=r"^linguistic_teacher\.model: .*hubert-tiny: model type 'hubert' is a speech "
                                         r"model; the linguistic teacher reads transcripts with a text encoder"):
        load_text_encoder(str(speech))
    tokenizer, encoder = load_text_encoder("tiny-random", seed=0)
    text = roots / "bert-tiny"
    tokenizer.save_pretrained(text)
    encoder.save_pretrained(text)
    with pytest.raises(ModelError, match=r"bert-tiny: model type 'bert' is not a supported speech backbone \(hubert, "
                                         r"wav2vec2, wavlm, whisper\)"):
        load_backbone(str(text))


def test_every_stage_trains_without_validation_speakers_and_keeps_its_last_epoch(roots):
    # data.validation_speakers=0: no model selection. The linguistic teacher's empty validation set made the
    # tokenizer fail (IndexError) after the prosodic teacher had trained
    from emolib.folds import make_folds

    corpus = toy_data(roots / "toy", sessions=3, per_class=1).corpus
    data = pipeline.Data(corpus, make_folds(corpus, "session", validation_speakers=0))
    assert data.fold(1).val_ids == () and data.fold(1).train_ids
    cfg = _cfg(**{"data.validation_speakers": 0, "prosodic_teacher.optim.epochs": 2,
                  "linguistic_teacher.optim.epochs": 2, "student.optim.epochs": 2})
    runs = [pipeline.train_teacher(kind, cfg, 1, data, verbose=False) for kind in ("prosodic", "linguistic")]
    runs.append(pipeline.train_student(cfg, 1, data, verbose=False))  # the full student, from both teachers
    for run in runs:
        m = run.metrics()
        assert (m["best_epoch"], m["epochs_run"]) == (2, 2) and m["best_val_ua"] is None, run.dir
        assert "val_ua" not in run.history().columns
