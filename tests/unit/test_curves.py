"""The report's curve aggregates agree with scikit-learn (and numpy) on the same rows, stay
small, and merge across shards to what the whole dataset gives."""

from __future__ import annotations

import json
import uuid
from functools import reduce

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from modeleval.api.curves import Confusion
from modeleval.api.results import ResultDocument
from modeleval.engine import curves as C
from modeleval.engine import metrics as M
from modeleval.engine import rankingcurves as R
from modeleval.engine.errors import EvaluationError

RNG = np.random.default_rng(29)


def _scores(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Adversarial binary score distributions: (labels, scores)."""
    y = RNG.integers(0, 2, n)
    if kind == "ties":  # a handful of distinct scores, both classes on each
        return y, RNG.integers(0, 5, n) / 4.0
    if kind == "constant":
        return y, np.full(n, 0.3)
    if kind == "skewed":  # one positive in n
        y = np.zeros(n, dtype=np.int64)
        y[n // 3] = 1
        return y, RNG.random(n)
    if kind == "margins":  # raw scores, not probabilities
        return y, RNG.normal(y * 0.4, 2.0)
    if kind == "separated":
        return y, y * 0.9 + RNG.random(n) * 0.1
    if kind == "noisy-unique":  # every score distinct, a weak signal: the most points to keep
        return y, RNG.normal(0.5 + 0.05 * y, 0.2)
    return y, np.clip(RNG.normal(0.45 + 0.1 * y, 0.25), 0, 1).round(3)


KINDS = ["ties", "constant", "skewed", "margins", "separated", "noisy-unique", "rounded"]


def _evaluate(tmp_path, name: str, spec: dict, **settings):
    """Runs ``spec`` locally (file:// URIs, its own cache and results directory): its document."""
    import yaml

    from modeleval.engine.evaluate import Identity
    from modeleval.runner import parse_manifest, run_manifest
    from modeleval.settings import EngineSettings

    manifest = parse_manifest(yaml.safe_dump({"apiVersion": "modeleval.dev/v1alpha1",
                                              "kind": "ModelEvaluation",
                                              "metadata": {"name": name}, "spec": spec}))
    engine = EngineSettings(cache_uri=(tmp_path / "cache").as_uri(), results_dir=tmp_path / "r",
                            **settings)
    return run_manifest(manifest, Identity(uuid.uuid4().hex[:12]), engine).document()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [50, 20_000])
def test_the_area_under_the_plotted_roc_is_the_reported_auc(kind, n):
    y, s = _scores(kind, n)
    roc = C.binary_curves(y, s).roc
    assert roc.exact_points == len(np.unique(s)) + 1
    plotted = np.trapezoid(roc.y, roc.x)
    assert abs(plotted - M.roc_auc(y, s)) <= 1e-4
    assert abs(plotted - roc.area) <= roc.area_error + 1e-12 <= C.CURVE_AREA_TOLERANCE + 1e-12
    assert roc.area == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    # Every plotted point is a point of scikit-learn's exact curve at the same threshold.
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    at = {t: (f, r) for f, r, t in zip(fpr, tpr, thresholds)}
    assert (roc.x[0], roc.y[0], roc.thresholds[0]) == (0.0, 0.0, None)
    for x, yy, t in zip(roc.x[1:], roc.y[1:], roc.thresholds[1:]):
        assert at[t] == pytest.approx((x, yy), abs=1e-12)
    assert len(roc.x) <= 600  # bounded: a noisy curve of 20,000 distinct scores, ~350 points


def test_three_million_rows_keep_few_points_and_the_auc():
    n = 3_000_000
    y = RNG.integers(0, 2, n)
    s = np.clip(RNG.normal(0.5 + 0.1 * y, 0.3), 0, 1)
    curves = C.binary_curves(y, s)
    assert abs(np.trapezoid(curves.roc.y, curves.roc.x) - M.roc_auc(y, s)) <= 1e-4
    assert curves.roc.exact_points > 2_000_000 and len(curves.roc.x) < 200
    assert len(json.dumps(curves.model_dump(mode="json"))) < 64 * 1024


def test_one_class_has_no_roc_and_no_positive_has_no_pr():
    s = RNG.random(100)
    negatives = C.binary_curves(np.zeros(100), s)
    assert negatives.roc is None and negatives.pr is None
    assert negatives.confusion.counts == [[int(np.sum(s <= 0.5)), int(np.sum(s > 0.5))], [0, 0]]
    positives = C.binary_curves(np.ones(100), s)
    assert positives.roc is None
    assert positives.pr.area == pytest.approx(skm.average_precision_score(np.ones(100), s))


@pytest.mark.parametrize("kind", KINDS)
def test_pr_points_and_average_precision_match_scikit_learn(kind):
    y, s = _scores(kind, 5000)
    pr = C.binary_curves(y, s).pr
    assert pr.area == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    at = {t: (r, p) for p, r, t in zip(precision, recall, thresholds)}
    for x, yy, t in zip(pr.x[1:], pr.y[1:], pr.thresholds[1:]):
        assert at[t] == pytest.approx((x, yy), abs=1e-12)
    assert pr.x[-1] == 1.0  # it reaches full recall


@pytest.mark.parametrize("kind", ["rounded", "ties", "skewed", "separated"])
def test_reliability_is_calibration_curve_with_its_expected_error(kind):
    y, s = _scores(kind, 20_000)
    diagram = C.binary_curves(y, s).reliability
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10)
    assert [b.fraction_positive for b in diagram.bins] == pytest.approx(prob_true, abs=1e-12)
    assert [b.mean_predicted for b in diagram.bins] == pytest.approx(prob_pred, abs=1e-12)
    rows = np.array([b.rows for b in diagram.bins])
    expected = np.sum(rows / len(y) * np.abs(prob_true - prob_pred))
    assert diagram.expected_calibration_error == pytest.approx(expected, abs=1e-12)
    assert rows.sum() == len(y)


def test_scores_outside_zero_one_have_no_reliability_and_non_finite_ones_no_curves():
    y, s = _scores("margins", 1000)
    assert C.binary_curves(y, s).reliability is None
    s[3] = np.nan
    with pytest.raises(EvaluationError, match="NaN or infinite"):
        C.binary_curves(y, s)


@pytest.mark.parametrize("kind", ["rounded", "margins", "ties"])
def test_confusion_sweep_and_score_histograms_match_scikit_learn(kind):
    y, s = _scores(kind, 10_000)
    curves = C.binary_curves(y, s)
    assert curves.confusion.counts == skm.confusion_matrix(y, s > 0.5, labels=[0, 1]).tolist()
    assert len(curves.sweep) == C.SWEEP_THRESHOLDS
    for row in curves.sweep:
        predicted = s > row.threshold
        (tn, fp), (fn, tp) = skm.confusion_matrix(y, predicted, labels=[0, 1])
        assert (row.tn, row.fp, row.fn, row.tp) == (tn, fp, fn, tp)
        assert row.precision == pytest.approx(skm.precision_score(y, predicted, zero_division=0))
        assert row.recall == pytest.approx(skm.recall_score(y, predicted, zero_division=0))
        assert row.f1 == pytest.approx(skm.f1_score(y, predicted, zero_division=0))
    edges = np.asarray(curves.scores_positive.edges)
    assert curves.scores_positive.counts == np.histogram(s[y == 1], edges)[0].tolist()
    assert curves.scores_negative.counts == np.histogram(s[y == 0], edges)[0].tolist()
    assert sum(curves.scores_positive.counts) + sum(curves.scores_negative.counts) == len(y)


@pytest.mark.parametrize("over", ["true", "pred", "all"])
def test_multiclass_confusion_normalises_and_per_class_scores_match(over):
    classes = 5
    y = RNG.integers(0, classes - 1, 4000)  # class 4 never occurs: its row stays 0
    p = RNG.dirichlet(np.ones(classes), 4000)
    p[np.arange(4000), y] += RNG.random(4000) * 0.5
    curves = C.multiclass_curves(y.astype(np.float64), p)
    predicted = p.argmax(axis=1)
    labels = list(range(classes))
    assert curves.confusion.counts == skm.confusion_matrix(y, predicted, labels=labels).tolist()
    expected = np.nan_to_num(skm.confusion_matrix(y, predicted, labels=labels, normalize=over))
    assert np.allclose(curves.confusion.normalised(over), expected)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    assert [c.precision for c in curves.per_class] == pytest.approx(precision)
    assert [c.recall for c in curves.per_class] == pytest.approx(recall)
    assert [c.f1 for c in curves.per_class] == pytest.approx(f1)
    assert [c.support for c in curves.per_class] == support.tolist()


def test_confusion_document_round_trips():
    matrix = Confusion(classes=[0, 1], cells=[3, 1, 0, 0])
    assert Confusion.model_validate(matrix.model_dump(by_alias=True)).normalised() == [[0.75, 0.25],
                                                                                       [0.0, 0.0]]


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_regression_histograms_merge_across_shards_exactly(scale):
    y = RNG.normal(3, 2, 30_000) * scale
    p = (y + RNG.normal(0, 0.5, 30_000) * scale)
    p[7] = np.nan
    cuts = [0, 10, 9000, 21000, 30_000]  # shards of very different ranges, one tiny
    shards = [(y[a:b], p[a:b]) for a, b in zip(cuts, cuts[1:])]
    merged = C.regression_curves(shards)
    whole = C.regression_curves([(y, p)])
    finite = np.isfinite(p)
    joint = merged.predicted_vs_actual
    assert len(joint.x_edges) - 1 <= C.REGRESSION_BINS and len(joint.y_edges) - 1 <= C.REGRESSION_BINS
    expected, _, _ = np.histogram2d(y[finite], p[finite], [joint.x_edges, joint.y_edges])
    assert joint.matrix() == expected.astype(int).tolist()
    residual = y[finite] - p[finite]
    assert merged.residuals.counts == np.histogram(residual, merged.residuals.edges)[0].tolist()
    assert merged.dropped == 1 and sum(merged.residuals.counts) == len(y) - 1
    # The whole dataset at once lands on bins at least as fine; coarsened they agree.
    assert merged.residuals.edges[0] <= residual.min() < residual.max() < merged.residuals.edges[-1]
    assert sum(whole.residuals.counts) == sum(merged.residuals.counts)
    # Merging in another order gives the same histograms.
    assert C.regression_curves(shards[::-1]) == merged


def _letor(queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, queries)
    qids = np.repeat(np.arange(queries) * 3 + 1, sizes).astype(np.float64)
    labels = rng.integers(0, 5, len(qids)).astype(np.float64)
    labels[qids == 4] = 0  # a query without a relevant document
    scores = labels * 0.3 + rng.normal(0, 1, len(qids))
    scores[qids == 7] = 0.5  # all tied
    return labels, scores, qids


def test_ranking_curves_are_the_metrics_at_every_cutoff_and_shards_merge():
    labels, scores, qids = _letor(400, 3)
    names = ["ndcg@5", "map@10", "precision@30"]
    curves = C.ranking_curves(C.RankingState.of(names, labels, scores, qids))
    assert len(curves.ndcg_at) == 30 and curves.cutoff == 5
    expected = M.ranking_metrics([f"ndcg@{k}" for k in range(1, 31)]
                                 + [f"precision@{k}" for k in range(1, 31)], labels, scores, qids)
    assert curves.ndcg_at == pytest.approx([expected[f"ndcg@{k}"] for k in range(1, 31)], abs=1e-12)
    assert curves.precision_at == pytest.approx([expected[f"precision@{k}"] for k in range(1, 31)],
                                                abs=1e-12)
    per_query = M.ranking_per_query(["ndcg@5"], labels, scores, qids)["ndcg@5"]
    assert curves.ndcg_distribution.counts == np.histogram(per_query, np.linspace(0, 1, 21))[0].tolist()
    unique, sizes = np.unique(qids, return_counts=True)
    worst = np.lexsort((unique, per_query))[:R.WORST_QUERIES]
    assert [(w.qid, w.ndcg, w.documents) for w in curves.worst_queries] == [
        (unique[i], pytest.approx(per_query[i], abs=1e-15), sizes[i]) for i in worst]
    for bucket in curves.by_query_length:
        inside = (sizes >= bucket.min_documents) & (sizes <= bucket.max_documents)
        assert bucket.queries == inside.sum()
        assert bucket.mean_ndcg == pytest.approx(per_query[inside].mean(), abs=1e-12)
    # Shards cut at query boundaries merge to the same aggregates.
    cuts = [0] + [int(np.searchsorted(qids, q)) for q in (301.0, 700.0, 1000.0)] + [len(qids)]
    parts = [C.RankingState.of(names, labels[a:b], scores[a:b], qids[a:b])
             for a, b in zip(cuts, cuts[1:])]
    merged = C.ranking_curves(reduce(C.RankingState.merge, parts))
    assert merged.ndcg_at == pytest.approx(curves.ndcg_at, abs=1e-12)
    assert merged.precision_at == pytest.approx(curves.precision_at, abs=1e-12)
    assert merged.ndcg_distribution == curves.ndcg_distribution
    assert merged.worst_queries == curves.worst_queries
    assert [b.queries for b in merged.by_query_length] == [b.queries for b in curves.by_query_length]


def test_ranking_cutoffs_cover_the_asked_ones_and_at_least_twenty():
    assert R.ranking_cutoffs(["map@10", "ndcg@3", "ndcg@50"]) == (50, 3)
    assert R.ranking_cutoffs(["mrr", "map"]) == (20, 10)


def test_thinning_bounds_the_area_error_and_keeps_straight_lines_short():
    x = np.linspace(0, 1, 10_001)
    keep, error = C.thin(x, x)
    assert keep.tolist() == [0, 10_000] and error == pytest.approx(0, abs=1e-12)
    y = np.sqrt(x)
    keep, error = C.thin(x, y)
    full = np.trapezoid(y, x)
    assert abs(np.trapezoid(y[keep], x[keep]) - full) <= error <= C.CURVE_AREA_TOLERANCE
    assert len(keep) < 200


def test_old_result_documents_without_curves_still_read():
    doc = ResultDocument.model_validate({"_id": "u:1", "uid": "u", "attempt": 1, "name": "n",
                                         "status": "Succeeded"})
    assert doc.curves is None


def test_an_evaluation_stores_every_models_curves(tmp_path):
    """A local binary evaluation (a candidate and a baseline) stores each model's aggregates,
    and the plotted ROC's area is the reported AUC."""
    import xgboost as xgb


    rng = np.random.default_rng(5)
    features = rng.normal(size=(3000, 4))
    labels = (features[:, 0] + rng.normal(0, 1, 3000) > 0).astype(int)
    for name, rounds in (("strong", 10), ("weak", 1)):
        xgb.XGBClassifier(n_estimators=rounds, max_depth=2).fit(features, labels) \
            .save_model(tmp_path / f"{name}.json")
    lines = [f"{y} " + " ".join(f"{j + 1}:{v:.5f}" for j, v in enumerate(row))
             for y, row in zip(labels, features)]
    (tmp_path / "data.txt").write_text("\n".join(lines) + "\n")
    root = tmp_path.as_uri()
    spec = {"task": "binary", "metrics": ["auc", "f1"], "model": {"uri": f"{root}/strong.json"},
            "baseline": {"model": {"uri": f"{root}/weak.json"}},
            "dataset": {"uri": f"{root}/data.txt"}}
    doc = _evaluate(tmp_path, "curves", spec)
    assert [c.model for c in doc.curves] == ["model", "baseline"]
    for curves, auc in zip(doc.curves, (doc.metrics["auc"], doc.baseline.metrics["auc"])):
        assert abs(np.trapezoid(curves.binary.roc.y, curves.binary.roc.x) - auc) <= 1e-4
    assert "curves" in doc.timings
    again = ResultDocument.model_validate(json.loads(doc.to_json()))
    assert again.curves == doc.curves


def test_a_ranking_evaluation_merges_its_shards_curves(tmp_path, monkeypatch):
    """The shards' ranking states, merged on the driver, give the reported metric at its
    cut-off."""

    from modeleval.demo import letor_bytes, make_letor, train_ranker

    train_ranker(make_letor(800, 8, mean_group=20, seed=1), rounds=5).save_model(tmp_path / "m.json")
    (tmp_path / "data.txt").write_bytes(letor_bytes(make_letor(2000, 8, mean_group=10, seed=2)))
    root = tmp_path.as_uri()
    spec = {"task": "ranking", "metrics": ["ndcg@10", "precision@5"],
            "model": {"uri": f"{root}/m.json"}, "dataset": {"uri": f"{root}/data.txt"}}
    merges = []
    merge = C.RankingState.merge
    monkeypatch.setattr(C.RankingState, "merge", lambda a, b: merges.append(1) or merge(a, b))
    doc = _evaluate(tmp_path, "ranked", spec, shard_bytes=4096)
    assert len(merges) == doc.dataset["shards"] - 1 > 0
    ranking = doc.curves[0].ranking
    assert ranking.ndcg_at[9] == pytest.approx(doc.metrics["ndcg@10"], abs=1e-12)
    assert ranking.precision_at[4] == pytest.approx(doc.metrics["precision@5"], abs=1e-12)
    assert sum(ranking.ndcg_distribution.counts) == doc.queries


def test_a_relayed_document_drops_curves_that_would_exceed_the_line_limit():
    from modeleval.api.curves import ModelCurves, MulticlassCurves
    from modeleval.api.results import MAX_DOCUMENT_LINE

    big = C.multiclass_curves(np.arange(200.0) % 200, np.eye(200))  # a 200 x 200 matrix
    doc = ResultDocument(_id="u:1", uid="u", attempt=1, name="n", namespace="ns",
                         status="Succeeded", metrics={"accuracy": 1.0},
                         curves=[ModelCurves(model=f"m{i}", multiclass=big) for i in range(8)])
    assert isinstance(big, MulticlassCurves) and len(doc.to_json()) > MAX_DOCUMENT_LINE
    line = doc.log_line()
    assert len(line) <= MAX_DOCUMENT_LINE
    relayed = ResultDocument.from_log(line, "u", 1, "n", "ns")
    assert relayed.metrics == {"accuracy": 1.0} and relayed.curves is None
    assert "curves were left out" in relayed.warnings[-1]
    small = doc.model_copy(update={"curves": doc.curves[:1]})
    assert ResultDocument.from_log(small.log_line(), "u", 1, "n", "ns").curves == small.curves


def test_queries_split_between_shards_get_their_curves_computed_over_every_row(tmp_path,
                                                                                monkeypatch):
    """A LETOR file whose queries' lines are interleaved: no shard holds a whole query, so the
    shards' states cannot be merged; the driver computes the curves over every row instead."""

    from modeleval.demo import letor_bytes, make_letor, train_ranker

    train_ranker(make_letor(800, 8, mean_group=20, seed=1), rounds=5).save_model(tmp_path / "m.json")
    lines = letor_bytes(make_letor(2000, 8, mean_group=10, seed=2)).decode().splitlines()
    interleaved = lines[0::2] + lines[1::2]  # every query's lines in both halves of the file
    (tmp_path / "data.txt").write_text("\n".join(interleaved) + "\n")
    root = tmp_path.as_uri()
    spec = {"task": "ranking", "metrics": ["ndcg@10"], "model": {"uri": f"{root}/m.json"},
            "dataset": {"uri": f"{root}/data.txt"}}

    def merged(*_):
        raise AssertionError("the shards' states of split queries were merged")

    monkeypatch.setattr(C.RankingState, "merge", merged)
    doc = _evaluate(tmp_path, "split", spec, shard_bytes=4096)
    assert doc.dataset["shards"] > 1
    ranking = doc.curves[0].ranking
    assert ranking.ndcg_at[9] == pytest.approx(doc.metrics["ndcg@10"], abs=1e-12)
    assert sum(ranking.ndcg_distribution.counts) == doc.queries


def _nested_arrays(value, path="$"):
    """The paths of arrays that hold an array (FerretDB v1 refuses such documents)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nested_arrays(v, f"{path}.{k}")]
    if isinstance(value, list):
        inner = [f"{path}[{i}]" for i, v in enumerate(value) if isinstance(v, list)]
        return inner + [p for i, v in enumerate(value) for p in _nested_arrays(v, f"{path}[{i}]")]
    return []


def test_no_task_stores_an_array_of_arrays():
    """Every task's aggregates are storable in the bed's MongoDB (FerretDB v1 refuses nested
    arrays): the confusion matrix and the 2-D histogram are flat, row-major."""
    from modeleval.api.curves import ModelCurves

    y, s = _scores("rounded", 2000)
    labels = RNG.integers(0, 4, 500)
    probabilities = RNG.dirichlet(np.ones(4), 500)
    regression = C.RegressionState.of(RNG.normal(size=800), RNG.normal(size=800)).curves()
    every = [ModelCurves(model="b", binary=C.binary_curves(y, s)),
             ModelCurves(model="m", multiclass=C.multiclass_curves(labels, probabilities)),
             ModelCurves(model="r", regression=regression)]
    dumped = [c.model_dump(by_alias=True, mode="json") for c in every]
    assert _nested_arrays(dumped[0]) == [] and _nested_arrays(dumped) == []
    matrix = every[1].multiclass.confusion.counts
    assert matrix == skm.confusion_matrix(labels, probabilities.argmax(axis=1),
                                          labels=[0, 1, 2, 3]).tolist()
    assert len(regression.predicted_vs_actual.matrix()) == len(regression.predicted_vs_actual.x_edges) - 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk", [5, 1 << 18])
def test_score_counts_are_exact_in_any_chunking(dtype, chunk, monkeypatch):
    """The counts (float32 scores sorted as packed keys, others by an argsort) are
    scikit-learn's, read in steps of any size; the AUC from them is roc_auc_score's."""
    monkeypatch.setattr(M, "CHUNK_ROWS", chunk)
    y = RNG.integers(0, 2, 3000)
    for s in (RNG.normal(size=3000), RNG.integers(-3, 3, 3000) * 0.5, np.zeros(3000),
              np.where(RNG.random(3000) < 0.5, -0.0, 0.0)):
        s = s.astype(dtype)
        counts = M.ScoreCounts.of(y, s)
        fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
        assert counts.thresholds.tolist() == thresholds[1:].tolist()  # (its first is inf)
        assert counts.tps.tolist() == np.rint(tpr[1:] * y.sum()).tolist()
        assert counts.fps.tolist() == np.rint(fpr[1:] * (len(y) - y.sum())).tolist()
        assert counts.auc() == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_curves_match_at_small_chunks_and_an_adversarial_curve_thins_every_point(monkeypatch):
    """Read in steps of 1,000 points, the curves are the ones read at once (the points kept may
    differ: each step's ends are grid points); a curve whose grid points miss too much area
    (pairs of tied-class zigzags far below a grid cell) falls back to thinning every point, and
    still keeps its area within the bound."""
    y, s = _scores("noisy-unique", 20_000)
    s = np.clip(s, 0, 1)
    whole = C.binary_curves(y, s)
    monkeypatch.setattr(M, "CHUNK_ROWS", 1000)
    steps = C.binary_curves(y, s)
    assert steps.model_dump(exclude={"roc", "pr", "reliability"}) == \
        whole.model_dump(exclude={"roc", "pr", "reliability"})
    for a, b in ((steps.roc, whole.roc), (steps.pr, whole.pr)):
        assert (a.area, a.exact_points) == (pytest.approx(b.area, abs=1e-12), b.exact_points)
    roc = steps.roc
    assert abs(np.trapezoid(roc.y, roc.x) - roc.area) <= roc.area_error <= C.CURVE_AREA_TOLERANCE
    assert steps.reliability.expected_calibration_error == pytest.approx(
        whole.reliability.expected_calibration_error, abs=1e-12)
    calls = []
    thin = C.thin
    monkeypatch.setattr(C, "thin", lambda x, yy, *a: calls.append(len(x)) or thin(x, yy, *a))
    # By descending score: 5 negatives, then runs of 10 positives and 10 negatives, so the
    # exact ROC is a staircase of grid-cell-sized steps with its corners in the cells' middles.
    cell = 10 * C.PLOT_GRID
    y = np.concatenate(([0] * 5, np.tile([1] * 10 + [0] * 10, C.PLOT_GRID), [0] * 5)) \
        [:2 * cell]
    s = np.arange(len(y), 0, -1) / len(y)
    roc = C.binary_curves(y, s).roc
    assert calls[-2] == len(y) + 1  # the ROC (then the PR curve): every point
    assert abs(np.trapezoid(roc.y, roc.x) - roc.area) <= roc.area_error + 1e-12
    assert roc.area_error <= C.CURVE_AREA_TOLERANCE


def test_an_evaluation_sorts_each_binary_models_scores_once(tmp_path, monkeypatch):
    """The AUC and the report's curves read the same counts: one ScoreCounts per model."""
    import xgboost as xgb


    rng = np.random.default_rng(3)
    features = rng.normal(size=(500, 3))
    labels = (features[:, 0] > 0).astype(int)
    xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(features, labels).save_model(tmp_path / "m.json")
    (tmp_path / "d.txt").write_text("".join(f"{y} 1:{a:.4f} 2:{b:.4f} 3:{c:.4f}\n"
                                            for y, (a, b, c) in zip(labels, features)))
    made = []
    of = M.ScoreCounts.of.__func__
    monkeypatch.setattr(M.ScoreCounts, "of", classmethod(lambda cls, *a: made.append(1) or of(cls, *a)))
    spec = {"task": "binary", "metrics": ["auc"], "model": {"uri": f"{tmp_path.as_uri()}/m.json"},
            "baseline": {"model": {"uri": f"{tmp_path.as_uri()}/m.json"}},
            "dataset": {"uri": f"{tmp_path.as_uri()}/d.txt"}}
    doc = _evaluate(tmp_path, "once", spec)
    assert len(made) == 2 and len(doc.curves) == 2
    assert doc.curves[0].binary.roc.area == pytest.approx(doc.metrics["auc"], abs=1e-12)


def test_the_binary_curves_read_the_counts_only_where_binary_searches_land(monkeypatch):
    """The report's binary aggregates that need every distinct score are gathered in the pass
    that tallies the sorted rows for the AUC; the curves then read the counts only at the points
    binary searches find: building them from a million distinct scores makes no array of that
    size (numpy's allocations peak below one count array's size: a look at every score would
    make several that large), sorts nothing again, and gives the curves of a tally read in one step."""
    import tracemalloc

    y = RNG.integers(0, 2, 1_000_000)
    s = np.clip(RNG.normal(0.45 + 0.1 * y, 0.25), 0, 1).astype(np.float32)
    whole = C.binary_curves(y, s)
    monkeypatch.setattr(M, "CHUNK_ROWS", 70_000)  # the tally hands its scores over in steps
    counts = M.ScoreCounts.of(y, s, C.BinaryTally())
    made = []
    of = M.ScoreCounts.of.__func__
    monkeypatch.setattr(M.ScoreCounts, "of", classmethod(lambda cls, *a: made.append(1) or of(cls, *a)))
    tracemalloc.start()
    try:
        curves = C.binary_curves(None, None, counts=counts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert made == [] and counts.curves.distinct == len(np.unique(s)) > 500_000
    assert peak < counts.tps.nbytes, peak  # a look at every score: at least that much
    exact = {"confusion", "scores_positive", "scores_negative", "sweep", "threshold"}
    assert curves.model_dump(include=exact) == whole.model_dump(include=exact)
    assert [b.model_dump() for b in curves.reliability.bins] == \
        [pytest.approx(b.model_dump(), abs=1e-12) for b in whole.reliability.bins]
    for part, full in ((curves.roc, whole.roc), (curves.pr, whole.pr)):
        assert (part.area, part.exact_points) == (pytest.approx(full.area, abs=1e-12),
                                                  full.exact_points)
    roc = curves.roc
    assert abs(np.trapezoid(roc.y, roc.x) - roc.area) <= roc.area_error
    assert abs(np.trapezoid(roc.y, roc.x) - skm.roc_auc_score(y, s)) <= 1e-4


def test_the_tallys_gathering_thread_ends_with_the_tally_and_raises_its_error(monkeypatch):
    """What the tally hands over is gathered on a thread of its own: it is gone once the counts
    are made, and an error in it is the tally's error (nothing is left running)."""
    import threading

    def tally_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("modeleval-report")]

    monkeypatch.setattr(M, "CHUNK_ROWS", 500)
    y, s = _scores("rounded", 5000)
    counts = M.ScoreCounts.of(y, s, C.BinaryTally())
    assert counts.curves.distinct == len(counts.tps) and tally_threads() == []

    def broken(self, *args):
        raise ValueError("a step that cannot be gathered")

    monkeypatch.setattr(C.BinaryTally, "_add_pr", broken)
    with pytest.raises(ValueError, match="cannot be gathered"):
        M.ScoreCounts.of(y, s, C.BinaryTally())
    assert tally_threads() == []
