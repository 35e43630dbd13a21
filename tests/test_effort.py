import itertools

import numpy as np
import pytest

from amips_plugins.effort import (
    DirectionGroups,
    EffortTable,
    ScoreBins,
    effort_grid,
    recall_per_query,
)


def table(recall, weights, cost=(1.0, 2.0, 4.0, 8.0)):
    recall = np.asarray(recall, np.float64)
    return EffortTable(
        10,
        efforts=[10, 20, 40, 80][: recall.shape[1]],
        groups=DirectionGroups(np.eye(len(recall), 3)),
        weights=weights,
        recall=recall,
        cost=cost[: recall.shape[1]],
    )


def test_effort_grid_grows_geometrically_between_its_ends():
    assert effort_grid(10, 40).tolist() == [10, 12, 15, 19, 24, 30, 38, 40]
    assert effort_grid(1, 4).tolist() == [1, 2, 3, 4]  # at least one more each step
    assert effort_grid(7, 7).tolist() == [7]


def test_recall_per_query_counts_each_rows_shared_ids():
    found = np.array([[1, 2, 3], [4, 5, 6]])
    truth = np.array([[3, 2, 9], [7, 8, 9]])
    assert recall_per_query(found, truth).tolist() == [2 / 3, 0.0]


def test_easy_groups_get_less_effort_and_the_choice_is_the_cheapest_meeting_the_target():
    # group 0 is done at the first effort, group 1 needs the last
    t = table([[1.0, 1.0, 1.0, 1.0], [0.2, 0.5, 0.8, 1.0]], [0.5, 0.5])
    assert t.efforts_for(1.0).tolist() == [10, 80]
    assert t.efforts_for(0.9).tolist() == [10, 40]
    assert t.curve() == {10: 0.6, 20: 0.75, 40: 0.9, 80: 1.0}
    rng = np.random.default_rng(0)
    for _ in range(50):  # against every assignment, on concave curves (where greedy raises are)
        steps = rng.dirichlet(np.ones(4), size=3) * rng.uniform(0.5, 1, (3, 1))
        recall = np.cumsum(np.sort(steps, axis=1)[:, ::-1], axis=1)
        weights = rng.dirichlet(np.ones(3))
        t = table(recall, weights, cost=(1.0, 2.0, 3.0, 4.0))
        target = rng.uniform(recall[:, 0] @ weights, recall[:, -1] @ weights)
        picked = np.searchsorted(t.efforts, t.efforts_for(target))
        achieved = weights @ recall[np.arange(3), picked]
        best = min(
            weights @ t.cost[list(c)]
            for c in itertools.product(range(4), repeat=3)
            if weights @ recall[np.arange(3), list(c)] >= target - 1e-12
        )
        assert achieved >= target - 1e-12
        # greedy raises are exact up to the last one (one step of one group)
        assert weights @ t.cost[picked] <= best + weights.max() * 1.0 + 1e-9


def test_targets_outside_the_measured_range_and_bad_tables_are_refused():
    t = table([[0.5, 0.9], [0.5, 0.7]], [0.5, 0.5])
    with pytest.raises(ValueError, match="above the calibrated maximum 0.8"):
        t.efforts_for(0.85)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            t.efforts_for(bad)
    state = t.state_dict()
    assert EffortTable.from_state_dict(state, 3).efforts_for(0.8).tolist() == [20, 20]
    with pytest.raises(ValueError, match="dimension 3"):
        EffortTable.from_state_dict(state, 4)
    for name, value in (
        ("efforts", [20, 10]),
        ("weights", [0.5, 0.6]),
        ("recall", [[0.5, 1.2], [0.5, 0.7]]),
        ("cost", [1.0, 0.0]),
        ("centroids", [[0.0, 0.0, 1.0]]),
    ):
        with pytest.raises(ValueError, match="inconsistent"):
            EffortTable.from_state_dict({**state, name: value}, 3)


def test_score_bins_split_at_quantiles_and_leave_no_bin_empty():
    scores = np.r_[np.full(600, 0.5), np.linspace(0.6, 1.0, 400), -np.inf]  # many ties, one -inf
    bins, of_query = ScoreBins.fit(scores)
    counts = np.bincount(of_query, minlength=len(bins))
    assert 1 < len(bins) <= 4 and (counts > 0).all()  # 1001 scores: 4 quantile bins at most
    np.testing.assert_array_equal(bins.of(scores), of_query)
    assert of_query[-1] == 0 and (np.diff(of_query[600:1000]) >= 0).all()  # by score
    assert len(ScoreBins.fit(np.full(100, 0.3))[0]) == 1
    with pytest.raises(ValueError, match="inconsistent"):
        ScoreBins([0.5, 0.2])


def test_a_table_from_per_query_measurements_averages_by_group():
    bins = ScoreBins([0.5])
    of_query = bins.of(np.array([0.1, 0.2, 0.9]))  # groups 0, 0, 1
    recall = np.array([[0.2, 1.0], [0.4, 0.6], [1.0, 1.0]])
    cost = np.array([[1.0, 3.0], [3.0, 5.0], [2.0, 2.5]])
    t = EffortTable.from_queries(10, [4, 8], bins, of_query, recall, cost)
    np.testing.assert_allclose(t.weights, [2 / 3, 1 / 3])
    np.testing.assert_allclose(t.recall, [[0.3, 0.8], [1.0, 1.0]])
    np.testing.assert_allclose(t.cost, [[2.0, 4.0], [2.0, 2.5]])
    assert t.efforts_for(0.85).tolist() == [8, 4]  # only the low-score group needs more
    loaded = EffortTable.from_state_dict(t.state_dict(), 99)  # bins have no dimension
    assert isinstance(loaded.groups, ScoreBins) and loaded.efforts_for(0.85).tolist() == [8, 4]
    with pytest.raises(ValueError, match="inconsistent"):
        EffortTable.from_state_dict({**t.state_dict(), "edges": [0.5, 0.7]}, 99)


def test_measure_searches_again_only_the_queries_that_miss_answers():
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((1000, 8))
    truth = np.arange(1000 * 4).reshape(1000, 4)
    needs = rng.choice([1, 2, 3, 4], 1000, p=[0.4, 0.3, 0.2, 0.1])  # all found from needs[i]
    searched = []

    def search(q, effort):  # half of its truth below its need
        rows = np.flatnonzero((queries[:, None] == q[None]).all(axis=2).any(axis=1))
        searched.append(len(rows))
        found = truth[rows].copy()
        found[effort < needs[rows], 2:] = -1
        return found

    table = EffortTable.measure(queries, truth, search, np.array([1, 2, 3, 4, 5]))
    expected = [np.mean(np.where(e >= needs, 1.0, 0.5)) for e in (1, 2, 3, 4)]
    np.testing.assert_allclose(list(table.curve().values()), expected)
    # the missing ones, and where fewer than 256, the first 256 queries beside them (timing)
    missing = [np.flatnonzero(needs > e) for e in (1, 2, 3)]
    assert [len(m) >= 256 for m in missing] == [True, True, False]
    expected = [m if len(m) >= 256 else np.union1d(m, np.arange(256)) for m in missing]
    assert searched == [1000, *map(len, expected)]
    assert table.efforts.tolist() == [1, 2, 3, 4]  # all found at 4: effort 5 never run
