import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from nero.detect.metrics import accuracy, fpr95, ood_metrics, rates_at_threshold


def test_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    s_id, s_ood = rng.normal(0, 1, 500), rng.normal(1, 1, 300)
    y = np.r_[np.zeros(500), np.ones(300)]
    s = np.r_[s_id, s_ood]
    m = ood_metrics(s_id, s_ood)
    assert m["auroc"] == round(100 * roc_auc_score(y, s), 2)
    assert m["aupr_out"] == round(100 * average_precision_score(y, s), 2)
    assert m["aupr_in"] == round(100 * average_precision_score(1 - y, -s), 2)


def test_fpr95_release_definition_by_hand():
    s_id = np.arange(20, dtype=float)  # t = sort(s_id)[floor(0.95·20)] = s_id[19] = 19
    s_ood = np.array([5.0, 19.0, 19.5, 30.0])
    assert fpr95(s_id, s_ood) == 0.5  # 5 and 19 are ≤ t


def test_fpr95_close_to_roc_curve_interpolation():
    rng = np.random.default_rng(1)
    s_id, s_ood = rng.normal(0, 1, 4000), rng.normal(1.5, 1, 4000)
    # ID is the positive class for "TPR 95 %" in the OOD literature
    fpr, tpr, _ = roc_curve(np.r_[np.ones(4000), np.zeros(4000)], -np.r_[s_id, s_ood])
    assert abs(fpr95(s_id, s_ood) - fpr[np.searchsorted(tpr, 0.95)]) < 0.01


def test_inverted_scores_give_low_auroc():
    assert ood_metrics(np.ones(10) * 5, np.zeros(10))["auroc"] == 0.0


def test_rates_and_accuracy():
    r = rates_at_threshold(np.array([0.0, 1.0, 2.0]), np.array([1.5, 3.0]), 1.0)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 1, 2, 0)
    assert r["precision"] == pytest.approx(2 / 3)
    assert accuracy(np.array([0, 1, 1]), np.array([0, 1, 0])) == 66.67


def test_bad_inputs():
    with pytest.raises(ValueError, match="0 OOD"):
        ood_metrics(np.ones(3), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        ood_metrics(np.array([np.nan, 1.0]), np.ones(2))


def test_precision_at_the_sets_own_prevalence_is_the_counted_precision_and_falls_with_it():
    from nero.detect.metrics import precision_at, rates_at_threshold

    rng = np.random.default_rng(3)
    id_scores, ood_scores = rng.normal(0, 1, 300), rng.normal(1.5, 1, 900)
    rates = rates_at_threshold(id_scores, ood_scores, 1.0)
    own = ood_scores.size / (ood_scores.size + id_scores.size)
    counted = rates["tp"] / (rates["tp"] + rates["fp"])
    assert precision_at(rates["tpr"], rates["fpr"], own) == pytest.approx(counted)
    assert precision_at(rates["tpr"], rates["fpr"], 0.05) < counted  # rarer OOD: more false alarms
    assert precision_at(0.0, 0.0, 0.5) != precision_at(0.0, 0.0, 0.5)  # nothing flagged: NaN
    with pytest.raises(ValueError, match="prevalence"):
        precision_at(0.5, 0.1, 1.5)
