"""LETOR parsing is exact (against scikit-learn's reader and the general parser), handles sparse
lines and comments, and reads a stream a block at a time. Every test runs on both first paths: the
compiled tokenizer and, as where the package was installed without a C compiler, Arrow's CSV
reader."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from modeleval.demo import letor_bytes, make_letor
from modeleval.engine.errors import DatasetError, Reason
from modeleval.engine import letor
from modeleval.engine.letor import DEFAULT_BLOCK_BYTES, parse_letor, parse_letor_stream
from modeleval.api.spec import DatasetSource
from modeleval.engine.storage import Storage

SMALL_BLOCKS = 1024  # a small shard is parsed in many blocks
COMPILED = letor._letor


@pytest.fixture(autouse=True, params=["compiled", "arrow"])
def first_path(request, monkeypatch):
    if request.param == "arrow":
        monkeypatch.setattr(letor, "_letor", None)
    return request.param


def test_dense_letor_matches_sklearn():
    data = make_letor(3000, 40, mean_group=30, seed=3)
    text = letor_bytes(data)
    shard = parse_letor(text, 40)
    x, y, q = load_svmlight_file(io.BytesIO(text), n_features=40, query_id=True)
    np.testing.assert_array_equal(shard.features, x.toarray().astype(np.float32))
    np.testing.assert_array_equal(shard.labels, y)
    np.testing.assert_array_equal(shard.qids, q)


def test_sparse_lines_leave_features_missing():
    data = make_letor(2000, 25, mean_group=17, seed=4, sparse=0.3)
    shard = parse_letor(letor_bytes(data), 25)
    np.testing.assert_array_equal(np.isnan(shard.features), np.isnan(data.features))
    np.testing.assert_array_equal(np.nan_to_num(shard.features), np.nan_to_num(data.features))


def test_unordered_indices_comments_and_blank_lines():
    text = b"# header comment\n3 qid:9 5:1.5 2:-2e-1 # docid = 7\n\n0 qid:9 1:4\n1 qid:10 3:0\n"
    shard = parse_letor(text)
    assert shard.features.shape == (3, 5)
    assert shard.features[0, 4] == 1.5 and shard.features[0, 1] == pytest.approx(-0.2)
    assert np.isnan(shard.features[1, 1]) and shard.features[2, 2] == 0
    np.testing.assert_array_equal(shard.qids, [9, 9, 10])
    np.testing.assert_array_equal(shard.labels, [3, 0, 1])


def test_sklearn_writer_output_reads_back():
    rng = np.random.default_rng(0)
    x = rng.random((50, 7))
    x[x < 0.3] = 0  # sklearn omits zeros: they come back missing, as XGBoost reads them
    y = rng.integers(0, 3, 50)
    buf = io.BytesIO()
    dump_svmlight_file(x, y, buf, query_id=np.repeat([1, 2], 25), zero_based=False)
    shard = parse_letor(buf.getvalue(), 7)
    np.testing.assert_allclose(np.nan_to_num(shard.features), x, rtol=1e-6)


@pytest.mark.parametrize("text, message", [
    (b"1 qid:1 1:0.5\nx qid:1 1:0.5\n", "label is not a number"),
    (b"1 qid:1 1:abc\n", "feature value is not a number"),
    (b"1 qid:1 1\n", "not index:value"),
    (b"1 qid:a 1:0.5\n", "qid is not an integer"),
    (b"1 qid:1 0:0.5\n", "start at 1"),
    (b"1 qid:1 1:0.5\n1 1:0.5\n", "no qid"),
])
def test_garbage_is_a_parse_error(text, message):
    with pytest.raises(DatasetError, match=message) as error:
        parse_letor(text)
    assert error.value.reason == Reason.DatasetParseError


def test_more_features_than_the_model_is_schema_mismatch():
    with pytest.raises(DatasetError, match="exceeds the expected 3") as error:
        parse_letor(b"1 qid:1 1:1 4:1\n", num_features=3)
    assert error.value.reason == Reason.SchemaMismatch


@pytest.mark.parametrize("line_end", [b"\n", b" \n", b"\r\n"])
def test_dense_fast_path_handles_line_endings(line_end):
    data = make_letor(300, 8, mean_group=10, seed=8)
    text = letor_bytes(data).replace(b"\n", line_end)
    shard = parse_letor(text, 8)
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.qids, data.qids)


def test_fast_and_general_paths_agree_on_mixed_input():
    dense = letor_bytes(make_letor(200, 6, seed=9))
    lines = dense.splitlines(keepends=True)
    lines[50] = b"4 qid:9999 2:1.5 6:2\n"  # one sparse line forces the general path
    mixed = parse_letor(b"".join(lines), 6)
    assert mixed.rows == 200 and np.isnan(mixed.features[50, 0]) and mixed.features[50, 5] == 2
    np.testing.assert_array_equal(parse_letor(dense, 6).features[:50], mixed.features[:50])


def test_binary_garbage_is_a_parse_error_not_a_crash():
    garbage = np.random.default_rng(0).bytes(20_000)
    with pytest.raises(DatasetError, match="not text") as error:
        parse_letor(garbage, 136, where="s3://b/garbled.txt")
    assert error.value.reason == Reason.DatasetParseError and "garbled.txt" in error.value.message


@pytest.mark.parametrize("line_end", [b"\n", b" \n", b"\r\n"])
def test_block_wise_parse_is_exact_across_block_edges(line_end):
    data = make_letor(700, 12, mean_group=9, seed=10)
    text = b"\n\n" + letor_bytes(data).replace(b"\n", line_end)
    text = text.replace(line_end, line_end + b"\n", 5)  # blank lines inside early blocks
    shard = parse_letor(text, 12, block_bytes=SMALL_BLOCKS)
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.labels, data.labels)
    np.testing.assert_array_equal(shard.qids, data.qids)


def test_a_sparse_line_in_a_late_block_falls_back_to_the_general_path():
    lines = letor_bytes(make_letor(400, 6, seed=11)).splitlines(keepends=True)
    lines[-3] = b"2 qid:77 5:0.25\n"
    shard = parse_letor(b"".join(lines), 6, block_bytes=SMALL_BLOCKS)
    assert shard.rows == 400 and shard.features[-3, 4] == np.float32(0.25)
    assert np.isnan(shard.features[-3, :4]).all()


def test_uniform_lines_with_shifting_indices_and_no_width_given():
    head = b"".join(b"1 qid:1 1:0.5 2:1.5\n" for _ in range(200))
    tail = b"".join(b"0 qid:2 3:2.5 7:3.5\n" for _ in range(200))  # a wider block, later
    shard = parse_letor(head + tail, block_bytes=SMALL_BLOCKS)
    assert shard.features.shape == (400, 7)
    assert shard.features[0, 1] == 1.5 and np.isnan(shard.features[0, 6])
    assert shard.features[399, 6] == 3.5 and np.isnan(shard.features[399, 0])
    wider = parse_letor(head + tail, 9, block_bytes=SMALL_BLOCKS)
    np.testing.assert_array_equal(wider.features[:, :7], shard.features)


def test_a_range_is_streamed_in_pieces_and_parsed_exactly(tmp_path):
    data = make_letor(900, 10, mean_group=12, seed=12)
    text = letor_bytes(data)
    path = tmp_path / "d.txt"
    path.write_bytes(b"xxxx" + text + b"yyyy")
    storage = Storage(allow_file=True)
    pieces = []
    with storage.open_range(path.as_uri(), 4, 4 + len(text)) as read:
        def counting(n: int) -> bytes:
            pieces.append(read(n))
            return pieces[-1]

        shard = parse_letor_stream(counting, len(text), 10, "d.txt", lambda: pytest.fail("re-read"),
                                   block_bytes=SMALL_BLOCKS)
    assert len(pieces) > 10 and max(map(len, pieces)) <= SMALL_BLOCKS and b"".join(pieces) == text
    np.testing.assert_array_equal(shard.features, data.features)
    np.testing.assert_array_equal(shard.qids, data.qids)


def test_a_stream_that_turns_irregular_is_parsed_again_whole():
    lines = letor_bytes(make_letor(300, 5, seed=13)).splitlines(keepends=True)
    lines[250] = b"3 qid:5 2:0.5 4:inf # a comment\n"  # inf: for the general parser
    text = b"".join(lines)
    reads = []
    shard = parse_letor_stream(io.BytesIO(text).read, len(text), 5, "d.txt",
                               lambda: reads.append(1) or text, block_bytes=SMALL_BLOCKS)
    assert reads == [1] and shard.rows == 300 and shard.features[250, 1] == np.float32(0.5)
    assert shard.features[250, 3] == np.inf and np.isnan(shard.features[250, [0, 2, 4]]).all()


def test_dense_lines_narrower_than_num_features_leave_the_rest_missing():
    data = make_letor(300, 5, seed=16)
    shard = parse_letor(letor_bytes(data), 8, block_bytes=SMALL_BLOCKS)
    assert shard.features.shape == (300, 8) and np.isnan(shard.features[:, 5:]).all()
    np.testing.assert_array_equal(shard.features[:, :5], data.features)


@pytest.mark.parametrize("block_bytes", [DEFAULT_BLOCK_BYTES, 700])
def test_a_stream_is_read_in_blocks_of_the_given_size(block_bytes):
    text = letor_bytes(make_letor(400, 6, seed=18))
    source = io.BytesIO(text)
    asked = []

    def read(n: int) -> bytes:
        asked.append(n)
        return source.read(n)

    shard = parse_letor_stream(read, len(text), 6, "d.txt", lambda: pytest.fail("re-read"),
                               block_bytes=block_bytes)
    assert set(asked) == {block_bytes} and len(asked) == -(-len(text) // block_bytes) + 1
    np.testing.assert_array_equal(shard.features, parse_letor(text, 6).features)


@pytest.mark.parametrize("block_bytes", [1, 7, 333, 1400, 5000])
def test_blocks_are_whole_lines_and_a_cut_line_is_joined_alone(block_bytes):
    """Blocks of any size, smaller than a line included, read as the whole text does; a line
    cut by a block's end is completed by itself (its own short block), so no block's bytes are
    copied to join it."""
    text = letor_bytes(make_letor(200, 9, mean_group=7, seed=44))
    source = io.BytesIO(text)
    arrow = letor._letor is None
    blocks = [bytes(b) for b in letor._line_blocks(source.read, block_bytes, arrow=arrow)]
    expect = text.replace(b":", b" ") if arrow else text
    assert b"".join(blocks) == expect
    assert all(b.endswith(b"\n") for b in blocks)
    # A block is a view of one read (at most block_bytes), or a cut line completed alone.
    assert all(len(b) <= block_bytes or b.count(b"\n") == 1 for b in blocks)
    source.seek(0)
    # (Arrow's CSV reader, the fallback, cannot take blocks smaller than a line: the general
    # parser reads those.)
    reread = (lambda: text) if arrow else (lambda: pytest.fail("re-read"))
    shard = parse_letor_stream(source.read, len(text), 9, "d.txt", reread,
                               block_bytes=block_bytes)
    whole = parse_letor(text, 9)
    np.testing.assert_array_equal(shard.features, whole.features)
    np.testing.assert_array_equal(shard.labels, whole.labels)
    np.testing.assert_array_equal(shard.qids, whole.qids)


def test_generated_letor_text_does_not_depend_on_its_chunking():
    """The generator writes rows in chunks (one Arrow string array is capped at 2 GB, which
    136 features reach near 1.5M rows); the text is the same however it is cut."""

    data = make_letor(500, 9, seed=4)
    data.features[::7, 3] = np.nan  # sparse lines leave features out
    whole = letor_bytes(data)
    assert letor_bytes(data, chunk_rows=37) == whole == letor_bytes(data, chunk_rows=1)
    assert whole.count(b"\n") == 500 and b" 4:" not in whole.splitlines()[0]


@pytest.mark.parametrize(("lines", "placement"), [
    (["1 qid:1 1:0.5 2:0.25 3:1", "0 qid:1 1:1 2:2 3:3"], letor.IN_ORDER),
    (["1 qid:1 2:0.5 5:0.25", "0 qid:1 2:1 5:2"], letor.SAME_COLUMNS),
    (["1 qid:1 1:0.5 2:0.25", "0 qid:1 2:1 3:2"], letor.SCATTERED),
])
def test_a_block_is_placed_by_the_cheapest_copy_its_indices_allow(lines, placement):
    """MSLR's dense lines take the block copy (a scatter costs several times as much)."""
    text = ("\n".join(lines) + "\n").encode()
    layout = letor._Layout.of(text[:text.find(b"\n")], 2**20)
    table = layout.read(memoryview(text.translate(letor._COLON_TO_SPACE)))
    index = np.stack([c.to_numpy() for c in table.columns[2::2]])
    assert letor._placement(index)[0] == placement
    parsed = parse_letor(text)
    assert np.array_equal(parsed.features, letor._parse_tokens(text, None, "t").features, equal_nan=True)


def test_lines_with_a_label_and_no_features_parse_to_missing_values():
    parsed = parse_letor(b"1 qid:1\n0 qid:1\n2 qid:2\n", 3)
    assert parsed.features.shape == (3, 3) and np.isnan(parsed.features).all()
    assert parsed.labels.tolist() == [1, 0, 2] and parsed.qids.tolist() == [1, 1, 2]
    assert parse_letor(b"1\n0\n").features.shape == (2, 0)


def test_the_development_install_compiles_the_tokenizer():
    """setup.py marks the extension optional (an install without a compiler still works), so
    a broken build would pass unseen: `make venv` here has gcc, and must have built it."""
    assert COMPILED is not None, "modeleval.engine._letor was not built (see setup.py)"


def _tokens() -> list[str]:
    """Decimal forms the tokenizer reads itself or hands on: short and long mantissas, float32
    midpoints and their neighbours, exponents, signs, zeros, range edges, and forms only the
    general parser reads (inf, nan) or nobody does."""
    rng = np.random.default_rng(7)
    tokens = ["0", "-0", "+0", "0.0", "00.050", ".5", "5.", "-.5", "+5", "5.e3", "1e5", "1E+05",
              "2.5e-3", "123456789012345678", "1234567890123456789", "12345678901234567890123",
              "0.000000000000000000000000000012", "16777217", "16777219", "33554435", "0.1",
              "3.4028235e38", "3.4028236e38", "3.5e38", "1e39", "1.1754944e-38", "1e-40", "1e-46",
              "inf", "-inf", "nan", "1e", ".", "-", ".e3", "0x10", "1_0", "1.2.3", "1e5e5", "--1",
              "9" * 40, "0." + "0" * 50 + "1", "1" + "0" * 30]
    # float32 midpoints written exactly (the C library rounds them half to even) and just off.
    for f in rng.uniform(0.01, 1000, 30).astype(np.float32):
        low, high = float(f), float(np.nextafter(f, np.float32(np.inf)))
        middle = (low + high) / 2
        tokens += [repr(middle), f"{middle:.17g}", f"{middle:.12g}", f"{middle:.9g}"]
    for digits in range(1, 24):
        for value in rng.uniform(0, 10.0 ** rng.integers(-30, 30), 8):
            tokens.append(f"{value:.{digits}g}")
            tokens.append(f"{-value:.{digits}e}")
    return tokens


PADDING = " ".join(f"{j}:0" for j in range(2, 12))  # a line long enough for the pair fast path


@pytest.mark.parametrize("where", ["label", "feature", "feature in a long line"])
def test_every_number_reads_as_the_general_parser_reads_it_bit_for_bit(where, first_path):
    """The fast paths read a decimal to the nearest float32 (one rounding), as Arrow's
    conversion in the general parser does, or leave the block to it: never another value.
    (A feature token with 32 bytes of line after it takes the tokenizer's pair fast path.)"""
    tokens = _tokens()
    lines = {"label": "{} qid:1 1:1\n", "feature": "1 qid:1 1:{}\n",
             "feature in a long line": "1 qid:1 1:{} " + PADDING + "\n"}
    for token in tokens:
        text = lines[where].format(token).encode()
        try:
            general = letor._parse_tokens(text, 11, "t")
        except DatasetError:
            with pytest.raises(DatasetError):
                parse_letor(text, 11)
            continue
        parsed = parse_letor(text, 11)
        got = parsed.labels if where == "label" else parsed.features[:, 0]
        want = general.labels if where == "label" else general.features[:, 0]
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), token
    # The tokenizer itself reads all but these (not by leaving every line to the general path):
    # beyond float32's normal range, inf and nan, and what is not a number.
    if first_path == "compiled":
        labels, qids = np.empty(1, np.float32), np.empty(1, np.int64)
        features = np.empty((1, 11), np.float32)
        left = {t for t in tokens
                if COMPILED.parse(f"{t} qid:1 1:{t} {PADDING}\n".encode(), labels, qids, features,
                                  11, -1) is None}
        assert left == {"3.4028236e38", "3.5e38", "1e39", "1e-40", "1e-46", "9" * 40,
                        "0." + "0" * 50 + "1", "inf", "-inf", "nan", "1e", ".", "-", ".e3",
                        "0x10", "1_0", "1.2.3", "1e5e5", "--1"}


def test_the_tokenizer_reads_comments_tabs_and_blank_lines_itself(first_path):
    text = (b"# a header\n\n2 qid:3 1:0.5\t3:1.5 # note\r\n \t\n"
            b"0 qid:3 2:-2 # 5:1\n1\tqid:4\t3:7e-1\r\n")
    source = io.BytesIO(text)
    re_read = [] if first_path == "compiled" else None
    shard = parse_letor_stream(source.read, len(text), 3, "t",
                               lambda: re_read.append(1) if re_read is not None else text)
    assert re_read in ([], None)
    assert shard.labels.tolist() == [2, 0, 1] and shard.qids.tolist() == [3, 3, 4]
    want = np.array([[0.5, np.nan, 1.5], [np.nan, -2, np.nan], [np.nan, np.nan, 0.7]], np.float32)
    np.testing.assert_array_equal(shard.features, want)


@pytest.mark.parametrize(("text", "message"), [
    (b"1 qid:1 1:1\n2 3:4\n", "no qid"),
    (b"1 qid:1 0:1\n", "start at 1"),
    (b"1 qid:x 1:1\n", "qid is not an integer"),
    (b"1 qid:1 1:1 4:2\n", "exceeds the expected 3"),
    (b"1 qid:1 a:1\n", "index is not an integer"),
    (b"1 qid:1 1:1:2\n", "not a number"),
])
def test_what_the_tokenizer_does_not_read_is_named_by_the_general_parser(text, message):
    lines = letor_bytes(make_letor(50, 3, seed=2)) + text
    with pytest.raises(DatasetError, match=message):
        parse_letor(lines, 3, block_bytes=SMALL_BLOCKS)


def _random_letor(rng: np.random.Generator, lines: int, width: int) -> bytes:
    """Valid LETOR text in the forms real files take: sparse lines in any order (a feature
    named twice keeps its last value), runs of spaces and tabs, CRLF, comments, blank lines,
    values in every notation."""
    out = []
    for _ in range(lines):
        roll = rng.random()
        if roll < 0.05:
            out.append(rng.choice(["", "  ", "\t", "# a comment line"]))
            continue
        names = rng.choice(np.arange(1, width + 1), rng.integers(0, width + 1), replace=False)
        if rng.random() < 0.5:
            names = np.sort(names)
        if len(names) and rng.random() < 0.1:
            names = np.append(names, names[0])
        values = [rng.choice([f"{v:.4f}", f"{v:.9g}", f"{v:e}", f"{v:.0f}", repr(float(v))])
                  for v in rng.normal(0, 10.0 ** rng.integers(-3, 6), len(names))]
        gap = lambda: rng.choice([" ", "  ", "\t", " \t"])  # noqa: E731
        tokens = [f"{rng.integers(0, 5)}", f"qid:{rng.integers(1, 40)}",
                  *[f"{n}:{v}" for n, v in zip(names, values)]]
        line = "".join(t + gap() for t in tokens) if rng.random() < 0.3 else " ".join(tokens)
        if rng.random() < 0.1:
            line += " # trailing 1:2"
        out.append(line + ("\r" if rng.random() < 0.2 else ""))
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize("seed", range(6))
def test_random_valid_letor_reads_as_the_general_parser_reads_it(seed, first_path):
    """... and the tokenizer reads it all itself (never handing the text on)."""
    rng = np.random.default_rng(seed)
    width = int(rng.integers(1, 30))
    text = _random_letor(rng, 400, width)
    general = letor._parse_tokens(text, None, "t")
    whole = (lambda: pytest.fail("handed on")) if first_path == "compiled" else (lambda: text)
    for num_features in (None, width + 3):
        shard = parse_letor_stream(io.BytesIO(text).read, len(text), num_features, "t", whole,
                                   block_bytes=SMALL_BLOCKS)
        want = general.features
        if num_features:
            want = np.hstack([want, np.full((len(want), num_features - want.shape[1]), np.nan,
                                            np.float32)])
        assert shard.features.view(np.uint32).tolist() == want.view(np.uint32).tolist()
        assert shard.labels.tolist() == general.labels.tolist()
        assert shard.qids.tolist() == general.qids.tolist()


def test_an_index_beyond_any_dataset_width_is_an_error_not_an_allocation():
    """Without numFeatures the width comes from the data: one absurd index must not become a
    matrix that wide (the process would be killed for memory)."""
    text = letor_bytes(make_letor(20, 4, seed=1)) + b"1 qid:9 99999999999:1\n"
    with pytest.raises(DatasetError, match="at most 1,000,000 features") as error:
        parse_letor(text, block_bytes=SMALL_BLOCKS)
    assert error.value.reason == Reason.SchemaMismatch
    # The same bound as the manifest's numFeatures.
    DatasetSource(uri="s3://bucket/d.txt", numFeatures=letor.MAX_FEATURES)
    with pytest.raises(ValueError, match="less than or equal to 1000000"):
        DatasetSource(uri="s3://bucket/d.txt", numFeatures=letor.MAX_FEATURES + 1)


@pytest.mark.parametrize("block_bytes", [DEFAULT_BLOCK_BYTES, SMALL_BLOCKS])
def test_rows_are_made_room_for_when_the_first_lines_are_long_and_the_rest_short(block_bytes):
    """The rows are estimated from the bytes per line so far; short lines after long ones
    outrun the estimate, and the arrays grow where the tokenizer stopped."""
    long = b"2 qid:1 " + b" ".join(b"%d:0.%d" % (i, i) for i in range(1, 301)) + b"\n"
    text = long * 3 + b"".join(b"%d qid:%d %d:1.5\n" % (i % 5, 2 + i // 7, 1 + i % 300)
                               for i in range(5000))
    source = io.BytesIO(text)
    shard = parse_letor_stream(source.read, len(text), None, "t",
                               lambda: text, block_bytes=block_bytes)
    general = letor._parse_tokens(text, None, "t")
    assert shard.rows == 5003 and shard.features.shape == (5003, 300)
    assert np.array_equal(shard.features, general.features, equal_nan=True)
    assert shard.qids.tolist() == general.qids.tolist()


def test_the_tokenizer_stops_where_the_rows_run_out():
    if COMPILED is None:
        pytest.skip("the tokenizer is not built (the test above says so)")
    text = b"# header\n1 qid:1 1:1\n\n2 qid:1 1:2\n3 qid:2 1:3\n"
    labels, qids, features = np.empty(2, np.float32), np.empty(2, np.int64), np.empty((2, 1), np.float32)
    rows, has_qid, widest, used = COMPILED.parse(text, labels, qids, features, 1, -1)
    assert (rows, has_qid, widest) == (2, 1, 1) and text[used:] == b"3 qid:2 1:3\n"
    assert COMPILED.parse(text[used:], labels, qids, features, 1, 1)[::3] == (1, len(text) - used)
    assert labels[0] == 3 and qids[0] == 2


def test_the_first_estimate_of_rows_is_not_taken_from_one_short_line(first_path):
    """A short comment first (3 bytes) must not size the tokenizer's arrays for a file of
    3-byte lines: with wide rows that estimate is gigabytes. (Arrow's path leaves comments to
    the general parser, which sizes them exactly.)"""
    data = make_letor(2000, 200, seed=8)
    text = b"#c\n" + letor_bytes(data)
    shard = parse_letor(text, 200)
    np.testing.assert_array_equal(shard.features, data.features)
    allocated = shard.features if shard.features.base is None else shard.features.base
    assert len(allocated) < 1.1 * 2001 + 16


# A task holding several CPUs parses its range in line-aligned pieces side by side.
def _parse_in_pieces(path, text: bytes, num_features: int | None, threads: int):
    from modeleval.engine.cache import PartStore
    from modeleval.engine.inference import LetorRange, _parse_range

    path.write_bytes(text)
    letor_range = LetorRange(0, path.as_uri(), 0, len(text), num_features, "unused", threads)
    return _parse_range(PartStore(Storage()), letor_range)


def _same_shard(a, b) -> None:
    assert a.features.shape == b.features.shape
    assert a.features.view(np.uint32).tolist() == b.features.view(np.uint32).tolist()
    assert a.labels.tolist() == b.labels.tolist()
    assert (a.qids is None) == (b.qids is None)
    if a.qids is not None:
        assert a.qids.tolist() == b.qids.tolist()


@pytest.fixture()
def small_pieces(monkeypatch):
    """Pieces of a few hundred bytes, and cuts looked for a few bytes at a time (lines longer
    than the window), so small texts are cut in many places."""
    from modeleval.engine import sharding

    monkeypatch.setattr(sharding, "MIN_PIECE_BYTES", 300)
    monkeypatch.setattr(sharding, "_LINE_WINDOW", 7)


@pytest.mark.parametrize("seed", range(4))
def test_a_range_parsed_in_pieces_is_one_parse_of_it(seed, tmp_path, small_pieces):
    """Random valid files (sparse lines in any order, comments, blank lines, CRLF): a piece
    narrower than another gets NaN in the other columns, as one parse gives earlier lines."""
    rng = np.random.default_rng(100 + seed)
    width = int(rng.integers(1, 30))
    text = _random_letor(rng, 300, width)
    if seed % 2:
        text = text.rstrip(b"\n")  # the last line without its newline
    for num_features in (None, width + 2):
        whole = _parse_in_pieces(tmp_path / "d.txt", text, num_features, 1)
        for threads in (2, 3, 8, 64):
            _same_shard(_parse_in_pieces(tmp_path / "d.txt", text, num_features, threads), whole)


def test_mslr_lines_parsed_in_pieces_are_exact(tmp_path, small_pieces):
    data = make_letor(700, 12, mean_group=9, seed=5, sparse=0.1)
    shard = _parse_in_pieces(tmp_path / "d.txt", letor_bytes(data), 12, 5)
    assert np.array_equal(shard.features, data.features, equal_nan=True)
    assert shard.labels.tolist() == data.labels.tolist() and shard.qids.tolist() == data.qids.tolist()


def test_pieces_are_cut_at_line_starts(tmp_path):
    from modeleval.engine.sharding import line_pieces

    text = b"".join(b"%d qid:1 1:%s\n" % (i % 3, b"7" * (i % 50)) for i in range(3000))
    path = tmp_path / "d.txt"
    path.write_bytes(b"pre\n" + text + b"tail without a newline")
    uri, start, end = path.as_uri(), 4, 4 + len(text) + 22
    for wanted in (1, 2, 7, 40):
        pieces = line_pieces(Storage(), uri, start, end, wanted, min_bytes=1000)
        assert pieces[0][0] == start and pieces[-1][1] == end
        assert all(a == b for (_, a), (b, _) in zip(pieces, pieces[1:]))  # no gap, no overlap
        assert len(pieces) <= min(wanted, (end - start) // 1000)
        assert all(path.read_bytes()[a - 1:a] == b"\n" for a, _ in pieces)
    # A cut asked for exactly at a line start is that line's start, not the next one's.
    assert line_pieces(Storage(), uri, 4, 27, 2, min_bytes=1) == [(4, 15), (15, 27)]
    # No line starts after the last cut's target: the rest is one piece.
    assert line_pieces(Storage(), uri, end - 22, end, 3, min_bytes=1) == [(end - 22, end)]


def test_pieces_that_disagree_on_query_ids_fail_as_one_parse_does(tmp_path, small_pieces):
    """Cut exactly where the lines stop having qid:, each piece is uniform: the range is then
    parsed as one, and the error is one parse's. Cut elsewhere, a piece names the mix itself."""
    with_qid, without = b"1 qid:1 1:0.5 3:2\n" * 100, b"1 1:0.5 3:2222222\n" * 100
    text = with_qid + without  # two pieces cut at len(text) // 2: the first line without qid:
    with pytest.raises(DatasetError, match="no qid") as one:
        _parse_in_pieces(tmp_path / "d.txt", text, 4, 1)
    with pytest.raises(DatasetError, match="no qid") as pieces:
        _parse_in_pieces(tmp_path / "d.txt", text, 4, 2)
    assert str(pieces.value) == str(one.value)
    for threads in (3, 7):
        with pytest.raises(DatasetError, match="no qid") as error:
            _parse_in_pieces(tmp_path / "d.txt", text, 4, threads)
        first, last = map(int, re.search(r"\(bytes (\d+)-(\d+)\)", str(error.value)).groups())
        assert first < len(with_qid) < last


def test_a_bad_token_in_a_piece_names_that_piece(tmp_path, small_pieces):
    lines = letor_bytes(make_letor(300, 4, seed=7)).splitlines(keepends=True)
    lines[200] = b"1 qid:9 1:abc\n"
    text = b"".join(lines)
    bad = len(b"".join(lines[:200]))
    with pytest.raises(DatasetError, match="feature value is not a number") as error:
        _parse_in_pieces(tmp_path / "d.txt", text, 4, 6)
    first, last = map(int, re.search(r"\(bytes (\d+)-(\d+)\)", str(error.value)).groups())
    assert first <= bad < last and (first, last) != (0, len(text))
