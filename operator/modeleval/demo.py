"""MSLR-shaped synthetic data and a trained XGBRanker, for `modeleval demo`, tests and benchmarks.

The data looks like MSLR-WEB30K: LETOR lines ``label qid:Q 1:v ... 136:v``, graded relevance
0-4 skewed towards 0, query groups of uneven size; relevance depends on a handful of features
so a trained ranker has something to learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class LetorData:
    features: np.ndarray  # float32, rows x features
    labels: np.ndarray    # int relevance 0..4
    qids: np.ndarray      # int64, contiguous groups


def make_letor(rows: int = 20_000, features: int = 136, mean_group: int = 120, seed: int = 7,
               sparse: float = 0.0) -> LetorData:
    """``sparse`` is the fraction of feature values left out of each line (NaN here)."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < rows:
        sizes.append(int(rng.integers(max(1, mean_group // 4), mean_group * 2)))
    sizes[-1] -= sum(sizes) - rows
    qids = np.repeat(np.arange(1, len(sizes) + 1, dtype=np.int64) * 7 + 10, sizes)
    values = rng.gamma(2.0, 1.0, size=(rows, features)).astype(np.float32)
    query_effect = np.repeat(rng.normal(0, 0.5, len(sizes)), sizes)
    signal = 0.9 * values[:, 0] + 0.6 * values[:, min(7, features - 1)] \
        - 0.4 * values[:, min(32, features - 1)] + 0.3 * values[:, min(100, features - 1)] \
        + query_effect + rng.normal(0, 1.0, rows)
    cuts = np.quantile(signal, [0.55, 0.8, 0.92, 0.98])
    labels = np.digitize(signal, cuts).astype(np.int64)
    if sparse:
        values[rng.random(values.shape) < sparse] = np.nan
    return LetorData(np.round(values, 4), labels, qids)


def letor_bytes(data: LetorData, chunk_rows: int = 200_000) -> bytes:
    """The data as LETOR text, built column-wise with Arrow (fast for hundreds of MB). Rows go in
    chunks: one Arrow string array holds at most 2 GB, which 136 features reach at about 1.5M
    rows."""
    return b"".join(_letor_chunk(data, start, min(start + chunk_rows, len(data.labels)))
                    for start in range(0, len(data.labels), chunk_rows))


def _letor_chunk(data: LetorData, start: int, stop: int) -> bytes:
    labels, qids = data.labels[start:stop], data.qids[start:stop]
    parts = [pa.array(labels.astype(str)), pa.array(np.char.add("qid:", qids.astype(str)))]
    for index in range(data.features.shape[1]):
        column = data.features[start:stop, index]
        # Values were rounded to 4 decimals; printing the float64 of that rounding gives the
        # short text ("0.1234") which parses back to exactly the stored float32.
        text = pc.cast(pa.array(np.round(column.astype(np.float64), 4)), pa.string())
        token = pc.binary_join_element_wise(pa.scalar(f"{index + 1}"), text, ":")
        # Sparse lines leave missing features out altogether.
        parts.append(pc.if_else(pa.array(np.isnan(column)), pa.scalar(None, pa.string()), token))
    lines = pc.binary_join_element_wise(*parts, " ", null_handling="skip")
    return ("\n".join(lines.to_pylist()) + "\n").encode()


def write_letor(data: LetorData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(letor_bytes(data))
    return path


def train_ranker(data: LetorData, rounds: int = 40, seed: int = 7):
    import xgboost as xgb

    ranker = xgb.XGBRanker(n_estimators=rounds, max_depth=6, learning_rate=0.1,
                           objective="rank:ndcg", tree_method="hist", random_state=seed,
                           eval_metric="ndcg@10")
    ranker.fit(data.features, data.labels, qid=data.qids)
    return ranker


EXAMPLES_BUCKET = "modeleval-examples"


def example_assets(seed: int = 7) -> dict[str, bytes]:
    """Every object the manifests in examples/ read, keyed by their path in the bucket."""
    import io

    import pyarrow.parquet as pq
    import xgboost as xgb

    assets: dict[str, bytes] = {}
    train, test = make_letor(8000, 136, seed=seed), make_letor(6000, 136, mean_group=60, seed=seed + 1)
    champion = train_ranker(train, rounds=30, seed=seed)
    challenger = train_ranker(make_letor(3000, 136, seed=seed + 2), rounds=8, seed=seed)
    assets["mslr/test.txt"] = letor_bytes(test)
    assets["models/ranker.json"] = bytes(champion.get_booster().save_raw("json"))
    assets["models/ranker-challenger.ubj"] = bytes(challenger.get_booster().save_raw("ubj"))
    shallow = train_ranker(train, rounds=3, seed=seed)  # a second challenger (spec.challengers)
    assets["models/ranker-shallow.json"] = bytes(shallow.get_booster().save_raw("json"))

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(8000, 20)).astype(np.float32)
    clicked = (features[:, 0] - 0.7 * features[:, 4] + rng.normal(scale=0.9, size=8000) > 0
               ).astype(np.int64)
    classifier = xgb.XGBClassifier(n_estimators=40, max_depth=4, random_state=seed).fit(
        features[:5000], clicked[:5000])
    columns = {f"f{j}": features[5000:, j] for j in range(20)}
    columns.update({"clicked": clicked[5000:],
                    "country": np.where(features[5000:, 2] > 0, "de", "fr")})
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    assets["clicks/test.parquet"] = sink.getvalue()
    assets["models/clicks.json"] = bytes(classifier.get_booster().save_raw("json"))
    try:
        from onnxmltools.convert import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        onnx_model = convert_xgboost(classifier, initial_types=[("input", FloatTensorType([None, 20]))])
        assets["models/clicks.onnx"] = onnx_model.SerializeToString()
    except ImportError:  # onnxmltools is a development dependency
        pass
    return assets


def publish_example_assets(storage, bucket: str = EXAMPLES_BUCKET) -> list[str]:
    """Uploads :func:`example_assets` to ``s3://bucket/`` (creating the bucket if needed)."""
    storage.create_bucket(bucket)
    uris = []
    for key, data in example_assets().items():
        uri = f"s3://{bucket}/{key}"
        storage.write(uri, data)
        uris.append(uri)
    return uris
