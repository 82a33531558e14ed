"""Fine-tuning: the SetFit-style text encoder, the image recipe, the lr finder, and the budget rule."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import smalldata
from smalldata.budget import (STANDARD_ERRORS_REQUIRED, FineTuneDecision, _decide, median_step_seconds, paired_gain,
                              parse_budget, sign_test)
from smalldata.finetune import LR_CAP, FineTunedImageClassifier, _held_out_fifth, capped_lr, suggest_lr
from smalldata.backbones import get_backbone
from smalldata.data import DataError
from smalldata.heads import logistic_regression_head
from smalldata.model import RAW_INPUTS, Model


def test_budgets_parse_and_bad_ones_say_how_to_write_them():
    assert parse_budget("5m") == 300 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45 and parse_budget(None) is None
    with pytest.raises(ValueError, match="90s, 5m or 1h"):
        parse_budget("five minutes")


def test_a_gain_within_one_standard_error_is_not_kept():
    # one image better on one fold of two (20 test images each): luck, not a reason to fine-tune
    lucky = _decide(FineTuneDecision("ft", "auto", False, "", folds_used=2, fold_accuracies=[0.95, 0.90],
                                     frozen_fold_accuracies=[0.90, 0.90], frozen_name="lr"))
    assert not lucky.kept and "not kept" in lucky.reason
    steady = _decide(FineTuneDecision("ft", "auto", False, "", folds_used=4, fold_accuracies=[0.95, 0.9, 1.0, 0.95],
                                      frozen_fold_accuracies=[0.9, 0.85, 0.9, 0.85], frozen_name="lr"))
    gain, error = paired_gain(steady.fold_accuracies, steady.frozen_fold_accuracies)
    assert steady.kept and gain == pytest.approx(0.075) and 0 < error < gain
    forced = _decide(FineTuneDecision("ft", "always", False, "", folds_used=2, fold_accuracies=[0.5, 0.5],
                                      frozen_fold_accuracies=[0.9, 0.9], frozen_name="lr"))
    assert forced.kept and "--finetune always" in forced.reason
    # one image of 40 held out won, none lost: a gain of exactly one standard error, in exact arithmetic
    one = np.r_[1.0, np.zeros(39)]
    single = _decide(FineTuneDecision("ft", "auto", False, "", held_out_examples=40, frozen_name="lr"),
                     one.mean(), one.std(ddof=1) / np.sqrt(40))
    assert not single.kept


def test_a_text_fine_tune_needs_a_positive_gain_on_the_folds_and_an_image_one_more_than_a_standard_error():
    # agnews at 8 per class (seed 0): folds of 3 texts, +1.9 points with a standard error of 7.3
    tuned = [6 / 7, 6 / 7, 5 / 6, 5 / 6, 4 / 6, 6 / 7, 1.0, 2 / 3, 0.5, 2 / 3]
    frozen = [5 / 7, 5 / 7, 5 / 6, 5 / 6, 1.0, 4 / 7, 5 / 7, 0.5, 5 / 6, 5 / 6]

    def decide(modality, tuned_folds):
        return _decide(FineTuneDecision("ft", "auto", False, "", folds_used=10, fold_accuracies=tuned_folds,
                                        frozen_fold_accuracies=frozen, frozen_name="lr",
                                        standard_errors_required=STANDARD_ERRORS_REQUIRED[modality]))
    text, image = decide("text", tuned), decide("image", tuned)
    assert text.kept and "+1.9 points" in text.reason and "a gain above zero" in text.reason
    assert not image.kept and "not more than one standard error" in image.reason
    level_gain = decide("text", frozen)  # no gain at all is not a gain
    assert not level_gain.kept and "not a gain above zero" in level_gain.reason
    assert FineTuneDecision("ft", "auto", False, "", standard_errors_required=0.0).sign_test_level == 0.5


def test_a_step_is_timed_as_the_median_of_three_after_an_untimed_one(monkeypatch):
    # one slow call among the timed ones (a page fault, another process) must not double the estimate
    durations = iter([5.0, 1.0, 2.1, 1.1])  # untimed first call, then three timed ones
    clock = [0.0]
    monkeypatch.setattr("smalldata.budget.time.perf_counter", lambda: clock[0])

    def step():
        clock[0] += next(durations)
    assert median_step_seconds(step) == pytest.approx(1.1)


def test_a_held_out_split_keeps_a_fine_tune_only_where_the_exact_sign_test_passes():
    # 20 held-out images, 4 won and 1 lost: 1.4 standard errors, but chance gives that 19% of the time
    frozen = np.r_[np.zeros(4, bool), np.ones(1, bool), np.ones(10, bool), np.zeros(5, bool)]
    tuned = np.r_[np.ones(4, bool), np.zeros(1, bool), np.ones(10, bool), np.zeros(5, bool)]
    won, lost, p = sign_test(tuned, frozen)
    gain, error = paired_gain(tuned.astype(float), frozen.astype(float))
    assert (won, lost) == (4, 1) and p == pytest.approx(6 / 32) and gain > error
    decision = _decide(FineTuneDecision("ft", "auto", False, "", held_out_examples=20, frozen_name="lr",
                                        sign_test_p=p), gain, error)
    assert not decision.kept and "p = 0.19" in decision.reason and "not below 0.16" in decision.reason
    text = _decide(FineTuneDecision("ft", "auto", False, "", held_out_examples=20, frozen_name="lr", sign_test_p=p,
                                    standard_errors_required=STANDARD_ERRORS_REQUIRED["text"]), gain, error)
    assert text.kept and text.reason.endswith("a gain above zero")
    won, lost, p = sign_test(np.r_[np.ones(3, bool), np.ones(17, bool)], np.r_[np.zeros(3, bool), np.ones(17, bool)])
    assert (won, lost) == (3, 0) and p == pytest.approx(1 / 8) and p < decision.sign_test_level
    assert sign_test(np.ones(5, bool), np.ones(5, bool)) == (0, 0, 1.0)  # no disagreement: no evidence


def test_a_held_out_text_fine_tune_is_kept_where_it_won_more_than_it_lost():
    # 13 held-out texts (agnews at 16 per class, session 17): one won, none lost. The sign test's
    # p is 0.5 exactly, which "below 0.5" refused, though the gain is above zero
    def decide(won: int, lost: int, modality: str) -> FineTuneDecision:
        tuned = np.r_[np.ones(won, bool), np.zeros(lost, bool), np.ones(13 - won - lost, bool)]
        frozen = np.r_[np.zeros(won, bool), np.ones(lost, bool), np.ones(13 - won - lost, bool)]
        p = sign_test(tuned, frozen)[2]
        gain, error = paired_gain(tuned.astype(float), frozen.astype(float))
        return _decide(FineTuneDecision("ft", "auto", False, "", held_out_examples=13, frozen_name="lr", sign_test_p=p,
                                        standard_errors_required=STANDARD_ERRORS_REQUIRED[modality]), gain, error)
    assert decide(1, 0, "text").kept and decide(3, 2, "text").kept
    assert not decide(2, 2, "text").kept and "not a gain above zero" in decide(2, 2, "text").reason
    assert not decide(1, 0, "image").kept and not decide(3, 2, "image").kept


def test_a_gain_that_rounds_to_zero_prints_without_a_minus_sign():
    # flowers12 at 5 per class (session 17): a fold gain of -0.0004 printed as "-0.0 points"
    decision = _decide(FineTuneDecision("ft", "auto", False, "", folds_used=3, fold_accuracies=[0.9, 0.9, 0.8996],
                                        frozen_fold_accuracies=[0.9, 0.9, 0.9], frozen_name="lr"))
    assert not decision.kept and "+0.0 points over lr" in decision.reason


def test_a_budget_too_small_for_three_folds_skips_fine_tuning_and_says_so(topics_csv):
    model = smalldata.train(smalldata.load_dataset(topics_csv), budget="2s", curve=False)
    assert not model.fine_tuning["kept"] and "not tried" in model.fine_tuning["reason"]
    assert model.head_name == model.comparison.chosen.name


@pytest.mark.slow
def test_text_fine_tune_moves_the_encoder_and_round_trips_through_safetensors(topics_csv, tmp_path):
    model = smalldata.train(smalldata.load_dataset(topics_csv), finetune="always", budget=0, curve=False)
    assert model.head_name.startswith("fine-tuned: contrastive") and model.fine_tuning["kept"]
    tuned = model.estimator
    assert tuned.loss_curve_[-1] < tuned.loss_curve_[0]  # the triplet loss went down
    texts = ["The referee showed a red card.", "Stir in the flour and butter.", "Expect drizzle all day."]
    base = get_backbone("all-MiniLM-L6-v2").embed_batch(texts)
    assert not np.allclose(tuned.transform(texts), base, atol=1e-3)  # the encoder was tuned, not frozen
    assert model.predict(texts) == ["sport", "cooking", "weather"]
    folder = model.save(tmp_path / "m")
    assert (folder / "encoder.safetensors").exists()
    assert not [p for p in folder.iterdir() if p.suffix in {".pkl", ".pickle", ".joblib", ".pt", ".bin"}]
    assert json.loads((folder / "model.json").read_text())["head"]["kind"] == "contrastive-text"
    loaded = Model.load(folder)
    assert loaded.estimator.onnx_ is not None  # a loaded tuned encoder embeds through ONNX Runtime
    many = texts * 30 + ["a much longer text about the weather tomorrow and the day after"] * 10  # several batches
    assert np.allclose(loaded.estimator.transform(many), tuned.transform(many), atol=1e-4)
    assert np.allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-5)


def test_lr_suggestion_is_a_tenth_of_the_last_rate_before_the_loss_blows_up_and_fine_tuning_caps_it():
    lrs = list(np.logspace(-5, -1, 12))
    # After the head-first step the loss wanders near its floor, then blows up (past 4x its lowest).
    wandering = [0.40, 0.38, 0.31, 0.27, 0.34, 0.22, 0.26, 0.18, 0.30, 0.61, 0.97, 2.0]
    assert suggest_lr(lrs, wandering) == pytest.approx(lrs[9] / 10)  # not the steepest dip at lrs[7]
    assert suggest_lr(lrs, [0.3] * 12) == pytest.approx(lrs[-1] / 10)  # never blew up: the largest rate tried
    assert capped_lr(8.1e-4) == LR_CAP and capped_lr(1.5e-4) == 1.5e-4 and capped_lr(8.1e-4, None) == 8.1e-4


@pytest.mark.slow
def test_the_early_stopping_fifth_holds_every_class_where_a_plain_fifth_is_too_few():
    # a cross-validation fold of 5 images each of 10 classes trains on 45; a fifth of 45 is 9 rows,
    # too few to hold one of each of 10 classes (this stopped `train --budget` at 5 per class)
    targets = np.concatenate([np.repeat(np.arange(10), 4), np.arange(5)])
    train, held = _held_out_fifth(targets, seed=0)
    assert sorted(targets[held]) == list(range(10))
    assert sorted(np.concatenate([train, held])) == list(range(45))


def test_image_fine_tune_trains_keeps_its_history_and_predicts_the_same_through_onnx(fashion_folder, tmp_path):
    dataset = smalldata.load_dataset(fashion_folder)
    paths, labels = list(dataset.inputs), np.asarray(dataset.labels)
    tuned = FineTunedImageClassifier(epochs=2, lr=1e-3, train_size=96).fit(paths, labels)
    assert [h["epoch"] for h in tuned.history_] == [0, 1, 2]  # epoch 0: the head-only state
    accuracies = [h["held_out_accuracy"] for h in tuned.history_]
    assert tuned.epochs_kept_ == max(e for e, a in enumerate(accuracies) if a == max(accuracies))  # ties: later
    assert np.mean(tuned.predict(paths) == labels) >= 0.9
    folder = tmp_path / "m"
    folder.mkdir()
    head = tuned.save_folder(folder)
    loaded = FineTunedImageClassifier.load_folder(folder, json.loads(json.dumps(head)))
    assert np.allclose(loaded.predict_proba(paths[:6]), tuned.predict_proba(paths[:6]), atol=1e-4)
    # The service predicts from uploaded bytes, decoded in memory: the same answers.
    from smalldata.service.predictor import Predictor

    served = Predictor(Model(classes=sorted(set(labels)), modality="image", features=RAW_INPUTS,
                             head_name=getattr(tuned, "kept_name_", "fine-tuned"), estimator=loaded))
    uploads = [Path(p).read_bytes() for p in paths[:6]]
    expected = tuned.predict_proba(paths[:6])[:, [list(tuned.classes_).index(c) for c in sorted(set(labels))]]
    assert np.allclose(served.images(uploads), expected, atol=1e-4)
    if tuned.fine_tuned_:
        # the final head was fit on the kept epoch's features of every image (reused from its held-out check)
        refit = logistic_regression_head().fit(tuned.transform(paths), labels)
        assert np.allclose(refit.coef_, tuned.head_.coef_, atol=1e-3)
        assert (folder / "body.safetensors").exists() and loaded.session_ is not None
        # Test-time augmentation: the mean of the image's and its mirror image's probabilities.
        loaded.tta = True
        pixels = get_backbone(loaded.backbone).pixels(paths[:6])
        plain = loaded.head_.predict_proba(loaded._body_features(pixels))
        mirrored = loaded.head_.predict_proba(loaded._body_features(pixels[:, :, ::-1].copy()))
        assert np.allclose(loaded.predict_proba(paths[:6]), (plain + mirrored) / 2, atol=1e-6)
    else:
        assert "early stopping undid fine-tuning" in tuned.kept_name_


@pytest.mark.slow
def test_a_fine_tune_too_costly_to_cross_validate_is_scored_on_a_held_out_fifth(fashion_folder):
    from smalldata.budget import held_out_split
    from smalldata.features import embed
    from smalldata.progress import QUIET
    from smalldata.train import _fit_and_check, candidates

    dataset = smalldata.load_dataset(fashion_folder)
    X, y = list(dataset.inputs), np.asarray(dataset.labels)
    frozen = next(c for c in candidates("image", "efficientnet-lite0") if c.name == "logistic-regression")
    check = _fit_and_check(frozen, embed(X, "efficientnet-lite0"), y)
    decision = FineTuneDecision("ft", "auto", False, "", frozen_name=frozen.name, estimated_fold_seconds=60.0)
    decision, kept = held_out_split(FineTunedImageClassifier(epochs=1, lr=1e-3, train_size=96), X, y, check,
                                    decision, QUIET)
    assert decision.held_out_examples == 5 and decision.folds_used == 0  # a fifth of 24, one per class at least
    assert "held-out fifth (5 examples)" in decision.protocol and "5 held-out examples" in decision.reason
    gain, error = decision.mean_gain, decision.gain_standard_error
    assert gain == pytest.approx(decision.fold_accuracies[0] - decision.frozen_fold_accuracies[0], abs=1e-4)
    assert decision.kept == (decision.sign_test_p < decision.sign_test_level and gain > 0) and (kept is not None) == decision.kept
    assert decision.held_out_won - decision.held_out_lost == round(gain * decision.held_out_examples)
    if kept is not None:  # the fit that was scored is the model; its head has learned from every example
        refit = logistic_regression_head().fit(kept.transform(X), y)
        assert np.allclose(kept.head_.coef_, refit.coef_)


@pytest.mark.slow
def test_lr_find_command_plots_and_suggests(fashion_folder, tmp_path):
    from typer.testing import CliRunner

    from smalldata.cli import app

    plot = tmp_path / "lr.png"
    result = CliRunner().invoke(app, ["lr-find", str(fashion_folder), "--plot", str(plot), "--steps", "4", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert len(found["lrs"]) == len(found["losses"]) >= 2 and 1e-7 < found["suggestion"] < 1
    assert found["fine_tune_rate"] == min(found["suggestion"], LR_CAP)
    assert plot.stat().st_size > 1000


def test_what_fine_tuning_cannot_train_is_refused_when_asked_for_and_left_out_of_the_budget(fashion_folder):
    from typer.testing import CliRunner

    from smalldata.cli import app

    pair = CliRunner().invoke(app, ["lr-find", str(fashion_folder), "--backbone", "efficientnet-lite0+efficientnet-lite2"])
    assert pair.exit_code != 0 and "two backbones side by side" in pair.output and "efficientnet-lite2" in pair.output
    text = CliRunner().invoke(app, ["lr-find", str(fashion_folder), "--backbone", "all-MiniLM-L6-v2"])
    assert text.exit_code != 0 and "is for texts" in text.output
    dataset = smalldata.load_dataset(fashion_folder)
    with pytest.raises(DataError, match="'colour-texture-stats' is not a network, and fine-tuning trains one: pick one "
                                        "of efficientnet-lite0, efficientnet-lite2, or leave out --finetune always"):
        smalldata.train(dataset, backbone="colour-texture-stats", finetune="always", curve=False)
    # with a budget (the CLI's default) the backbone the user chose is kept, and fine-tuning is not tried
    model = smalldata.train(dataset, backbone="colour-texture-stats", budget="5m", curve=False)
    assert model.features == "colour-texture-stats" and not model.fine_tuning["kept"]
    assert model.fine_tuning["reason"] == "not tried: 'colour-texture-stats' is not a network, and fine-tuning trains one"


def test_a_budget_lets_the_stronger_encoder_join_the_same_folds(topics_csv, tmp_path):
    model = smalldata.train(smalldata.load_dataset(topics_csv), budget="10m", finetune="never", curve=False)
    assert model.stronger_encoder["encoder"] == "all-mpnet-base-v2" and model.stronger_encoder["tried"]
    scores = {score.name: score for score in model.comparison.scores}
    stronger = scores["logistic-regression on all-mpnet-base-v2"]
    assert stronger.features == "all-mpnet-base-v2" and len(stronger.fold_accuracies) == len(scores["logistic-regression"].fold_accuracies)
    saved = json.loads((model.save(tmp_path / "m") / "model.json").read_text())
    assert saved["stronger_encoder"]["tried"] and saved["features"] == model.features


@pytest.mark.slow
def test_a_budget_lets_lite2_join_the_image_folds_and_the_choice_predicts_after_reload(fashion_folder, tmp_path):
    dataset = smalldata.load_dataset(fashion_folder)
    model = smalldata.train(dataset, budget="10m", finetune="never", curve=False)
    assert model.stronger_encoder["encoder"] == "efficientnet-lite2" and model.stronger_encoder["tried"]
    assert "images" in model.stronger_encoder["reason"] or "cached" in model.stronger_encoder["reason"]
    scores = {score.name: score for score in model.comparison.scores}
    lite2 = scores["logistic-regression on efficientnet-lite2"]
    assert lite2.features == "efficientnet-lite2"
    assert len(lite2.fold_accuracies) == len(scores["logistic-regression"].fold_accuracies)
    assert lite2.mean > 0.8  # trousers, bags and sneakers: a real backbone tells them apart
    paired = model.comparison.scores[0]  # listed first: preferred within one standard error
    assert paired.name == "logistic-regression on efficientnet-lite0+efficientnet-lite2"
    assert paired.features == "efficientnet-lite0+efficientnet-lite2" and len(paired.fold_accuracies) == len(lite2.fold_accuracies)
    loaded = Model.load(model.save(tmp_path / "m"))
    assert loaded.features == model.features
    assert list(loaded.predict(dataset.inputs[:6])) == list(model.predict(dataset.inputs[:6]))
    assert smalldata.train(dataset, backbone="efficientnet-lite0", budget="10m", finetune="never",
                           curve=False).stronger_encoder is None  # a backbone the user chose is kept


@pytest.mark.slow
def test_a_paired_backbone_embeds_both_side_by_side_and_serves_uploads_like_paths(fashion_folder):
    from smalldata.features import embed
    from smalldata.service.predictor import Predictor

    dataset = smalldata.load_dataset(fashion_folder)
    pair = "efficientnet-lite0+efficientnet-lite2"
    both = embed(dataset.inputs[:4], pair)
    assert both.shape == (4, 2560) and get_backbone(pair).dim == 2560
    assert np.array_equal(both, np.hstack([embed(dataset.inputs[:4], "efficientnet-lite0"),
                                           embed(dataset.inputs[:4], "efficientnet-lite2")]))
    model = smalldata.train(dataset, backbone=pair, finetune="never", curve=False)
    assert model.features == pair and model.comparison.chosen.features == pair
    uploads = [Path(path).read_bytes() for path in dataset.inputs[:3]]
    assert np.allclose(Predictor(model).images(uploads), model.predict_proba(dataset.inputs[:3]), atol=1e-4)
    with pytest.raises(DataError, match="is two backbones side by side, and fine-tuning trains one network"):
        smalldata.train(dataset, backbone=pair, finetune="always", curve=False)
    budgeted = smalldata.train(dataset, backbone=pair, budget="5m", curve=False)
    assert budgeted.features == pair and budgeted.fine_tuning["reason"].startswith("not tried: ")


def test_the_stronger_encoder_needs_a_budget_that_fits_and_the_default_encoder(topics_csv, tmp_path):
    # texts no other test embedded: cached embeddings would cost nothing, and so fit any budget
    with open(topics_csv, newline="") as source, open(tmp_path / "fresh.csv", "w", newline="") as fresh:
        writer = csv.writer(fresh)
        writer.writerows([row if n == 0 else [row[0] + " (fresh)", row[1]] for n, row in enumerate(csv.reader(source))])
    tight = smalldata.train(smalldata.load_dataset(tmp_path / "fresh.csv"), budget="1s", finetune="never", curve=False)
    assert not tight.stronger_encoder["tried"] and "larger --budget" in tight.stronger_encoder["reason"]
    assert not any("all-mpnet-base-v2" in score.name for score in tight.comparison.scores)
    dataset = smalldata.load_dataset(topics_csv)
    assert smalldata.train(dataset, backbone="all-MiniLM-L6-v2", budget="10m", finetune="never", curve=False).stronger_encoder is None
    assert smalldata.train(dataset, curve=False).stronger_encoder is None  # no budget: nothing slower is tried
