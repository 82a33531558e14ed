import pytest

from smalldata.intervals import wilson


@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    # Published values: Newcombe (1998), Statistics in Medicine 17, table I (95%, Wilson score method).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_matches_published_values(successes, n, low, high):
    interval = wilson(successes, n)
    assert interval.low == pytest.approx(low, abs=1e-4) and interval.high == pytest.approx(high, abs=1e-4)


def test_all_right_on_few_examples_is_no_zero_width_interval():
    few, many = wilson(15, 15), wilson(150, 150)
    assert few.high == 1.0 and few.share == 1.0
    assert 0.78 < few.low < 0.81  # 15 of 15: the true accuracy may well be 80%
    assert few.low < many.low < 1.0  # more examples, a narrower interval, never a point


def test_symmetric_and_inside_zero_one():
    for n in (1, 2, 7, 30):
        for k in range(n + 1):
            a, b = wilson(k, n), wilson(n - k, n)
            assert 0.0 <= a.low <= a.share <= a.high <= 1.0
            assert a.low == pytest.approx(1 - b.high) and a.high == pytest.approx(1 - b.low)


def test_higher_confidence_is_wider():
    narrow, wide = wilson(12, 15, confidence=0.8), wilson(12, 15, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


@pytest.mark.parametrize(("successes", "n", "confidence", "message"), [
    (3, 0, 0.95, "at least 1 trial"), (4, 3, 0.95, "between 0 and n"), (-1, 3, 0.95, "between 0 and n"),
    (1.5, 3, 0.95, "whole numbers"), (1, 3, 95, "between 0 and 1"), (True, 3, 0.95, "whole numbers"),
])
def test_bad_input_is_a_clear_error(successes, n, confidence, message):
    with pytest.raises(ValueError, match=message):
        wilson(successes, n, confidence=confidence)
