import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import amips_plugins as ap  # noqa: E402
from amips_plugins.learn.training import key_recovery, routing_accuracy  # noqa: E402

rng = np.random.default_rng(0)
KEYS = (rng.standard_normal((300, 8)) * rng.lognormal(0, 0.4, (300, 1))).astype(np.float32)
QUERIES = rng.standard_normal((3000, 8)).astype(np.float32)
TEST = rng.standard_normal((500, 8)).astype(np.float32)


def recovery(model):
    keys = ap.QueryTransform(model).keys(TEST)
    return key_recovery(keys, KEYS, ap.topk_dot(TEST, KEYS, 1)[1][:, 0])


@pytest.mark.parametrize(
    "make, floor",
    [
        (lambda: ap.KeyNet(8, width=64, depth=3), 0.45),
        (lambda: ap.SupportNet(8, width=64, depth=3), 0.2),
    ],
)
def test_training_beats_the_untrained_model(make, floor):
    torch.manual_seed(0)
    model = make()
    before = recovery(model)
    history = ap.fit(
        model,
        KEYS,
        QUERIES,
        steps=1200,
        batch_size=256,
        lr=3e-3,
        eval_every=300,
        progress=False,
        device="cpu",
    )
    after = recovery(model)
    assert after >= floor and after > before + 0.15, (before, after)
    assert history[-1]["stopped"] in ("steps", "early") and not model.training
    assert model.key_fingerprint["n"] == 300


def test_router_learns_cluster_support_values():
    offsets = np.arange(0, 301, 30)  # 10 clusters of 30 keys
    torch.manual_seed(0)
    model = ap.SupportNet(8, num_outputs=10, width=64, depth=2)
    truth = ap.compute_targets(KEYS, TEST, offsets=offsets).scores
    before = routing_accuracy(ap.QueryTransform(model).scores(TEST), truth)
    history = ap.fit(
        model,
        KEYS,
        QUERIES,
        offsets=offsets,
        key_weight=0.0,
        score_weight=1.0,
        steps=800,
        batch_size=256,
        lr=3e-3,
        eval_every=200,
        progress=False,
        device="cpu",
    )
    after = routing_accuracy(ap.QueryTransform(model).scores(TEST), truth)
    # Ten arbitrary (not clustered) segments: chance is 10%; 40% measured after 800 steps.
    assert after > max(0.3, before + 0.2), (before, after)
    assert "routing_top1" in history[-1]


def test_targets_and_augmentation():
    t = ap.compute_targets(KEYS, TEST)
    np.testing.assert_array_equal(t.ids, ap.topk_dot(TEST, KEYS, 1)[1][:, 0])
    aug = ap.augment_queries(TEST, copies=3, noise=0.05, seed=1)
    assert aug.shape == (2000, 8)
    np.testing.assert_array_equal(aug[:500], TEST)
    rel = np.linalg.norm(aug[500:1000] - TEST, axis=1) / np.linalg.norm(TEST, axis=1)
    assert 0.05 * np.sqrt(8) * 0.5 < rel.mean() < 0.05 * np.sqrt(8) * 1.5
    seg = ap.compute_targets(KEYS, TEST, offsets=[0, 100, 300])
    np.testing.assert_array_equal(seg.ids, ap.segment_max_dot(TEST, KEYS, [0, 100, 300])[1])


def test_ctrl_c_keeps_the_best_weights():
    torch.manual_seed(0)
    model = ap.KeyNet(8, width=32, depth=2)
    real_key, calls = model.key, {"n": 0}

    def key(q):
        calls["n"] += 1
        if calls["n"] == 400:
            raise KeyboardInterrupt
        return real_key(q)

    model.key = key
    history = ap.fit(model, KEYS, QUERIES, steps=1000, eval_every=100, progress=False, device="cpu")
    assert history[-1]["stopped"] == "interrupted"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_time_budget_stops_training():
    model = ap.KeyNet(8, width=32, depth=2)
    history = ap.fit(
        model,
        KEYS,
        QUERIES,
        steps=10**6,
        eval_every=10**5,
        time_budget=1.0,
        progress=False,
        device="cpu",
    )
    assert history[-1]["stopped"] == "time" and history[-1]["seconds"] < 5


def test_diverging_loss_stops_with_a_clear_error():
    model = ap.KeyNet(8, width=16, depth=1)
    model.key = lambda q: q * float("nan")
    with pytest.raises(FloatingPointError, match="became nan"):
        ap.fit(model, KEYS, QUERIES, steps=10, progress=False, device="cpu")


def test_too_large_a_learning_rate_is_named_when_training_diverges():
    model = ap.KeyNet(8, width=64, depth=8)
    with pytest.raises(
        FloatingPointError, match=r"diverged with lr=999: .* at step \d+ of 50; try a smaller lr$"
    ):
        ap.fit(model, KEYS, QUERIES, lr=999, steps=50, progress=False, device="cpu")


def test_bad_training_input():
    with pytest.raises(ValueError, match="dimension 8"):
        ap.fit(ap.KeyNet(8), KEYS[:, :5], QUERIES, steps=1, progress=False)
    with pytest.raises(ValueError, match="outputs"):
        ap.fit(
            ap.SupportNet(8, num_outputs=3),
            KEYS,
            QUERIES,
            offsets=[0, 100, 300],
            steps=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="NaN"):
        ap.fit(ap.KeyNet(8), KEYS, np.full((10, 8), np.nan), steps=1, progress=False)
    with pytest.raises(ValueError, match="one-output"):
        ap.QueryTransform(ap.KeyNet(8, num_outputs=2)).keys(TEST)
    with pytest.raises(ValueError, match=r"dimension 8.*\(4, 3\)"):
        ap.QueryTransform(ap.KeyNet(8)).keys(np.ones((4, 3)))


def test_a_query_transform_of_another_dimension_is_named_in_one_line():
    import faiss

    wrong = ap.KeyNet(16, width=8, depth=1)
    indexes = [lambda m: ap.AmortizedIVF(faiss.IndexFlatIP(8), 8, 4, query_transform=m)]
    if importlib.util.find_spec("hnswlib") is not None:
        indexes.append(lambda m: ap.AmortizedHNSW("ip", 8, query_transform=m))
    for make in indexes:
        with pytest.raises(ValueError) as raised:
            make(wrong)
        message = str(raised.value)
        assert "\n" not in message and "got a KeyNet with dim 16 and num_outputs 1" in message
        assert "dim 8" in message
        with pytest.raises(TypeError, match="MaxAffineNet of dim 8, got str$"):
            make("keynet.pt")
    with pytest.raises(ValueError, match=r"keys must have dimension 16, got shape \(300, 8\)"):
        ap.fit(wrong, KEYS, QUERIES, steps=1, progress=False, device="cpu")


def test_fit_max_affine_recovers_the_keys_that_win():
    model = ap.fit_max_affine(KEYS, QUERIES, 64, temperatures=(0.0,))
    _, best = ap.topk_dot(TEST, KEYS, 1)
    covered = np.isin(best[:, 0], ap.topk_dot(QUERIES, KEYS, 1)[1][:, 0]).mean()
    # Every test query whose best key won a training query (and is among the 64 kept) is exact.
    assert recovery(model) >= 0.6 and recovery(model) <= covered
    assert model.key_fingerprint["n"] == 300 and len(model.pieces) <= 64
    with torch.no_grad():
        pieces = model.pieces.numpy()
    assert all((KEYS == p).all(axis=1).any() for p in pieces)  # the pieces are keys


def test_fit_max_affine_picks_the_temperature_with_least_relative_error():
    from amips_plugins.learn.training import relative_key_error

    grid = (0.0, 0.05, 10.0)
    model = ap.fit_max_affine(KEYS, QUERIES, 64, temperatures=grid)
    assert model.temperature in grid
    true_ids = ap.topk_dot(TEST, KEYS, 1)[1][:, 0]
    errors = {}
    for t in grid:
        other = ap.MaxAffineNet(8, len(model.pieces), t)
        other.pieces.data.copy_(model.pieces.data)
        errors[t] = relative_key_error(ap.QueryTransform(other).keys(TEST), TEST, KEYS, true_ids)
    assert errors[model.temperature] <= min(errors.values()) * 1.1, (
        errors
    )  # picked on held-out queries
    with pytest.raises(ValueError, match="val_fraction"):
        ap.fit_max_affine(KEYS, QUERIES, 64, val_fraction=1.0)
    with pytest.raises(ValueError, match="dimension"):
        ap.fit_max_affine(KEYS, QUERIES[:, :4], 64)


def test_a_diverged_fit_leaves_the_best_weights_in_eval_mode():
    model = ap.KeyNet(8, width=16, depth=1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    forward = model.key
    calls = {"n": 0}

    def diverge_later(q):
        calls["n"] += 1
        return forward(q) * (float("nan") if calls["n"] > 3 else 1.0)

    model.key = diverge_later
    with pytest.raises(FloatingPointError):
        ap.fit(model, KEYS, QUERIES, steps=50, eval_every=100, progress=False, device="cpu")
    assert not model.training
    for name, value in model.state_dict().items():  # the EMA of the start, not diverged weights
        assert torch.isfinite(value).all()
        assert torch.allclose(value, start[name], atol=1e-2)


@pytest.mark.parametrize(
    "setting, error",
    [
        ({"steps": 0}, ValueError),
        ({"eval_every": 0}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"batch_size": -1}, ValueError),
        ({"lr": 1e30}, ValueError),
        ({"device": "bogus"}, ValueError),
    ],
)
def test_fit_settings_are_checked_first(setting, error):
    with pytest.raises(error):
        ap.fit(ap.KeyNet(8), KEYS, QUERIES, progress=False, **{"device": "cpu", **setting})


def test_fit_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="SupportNet or KeyNet"):
        ap.fit(object(), KEYS, QUERIES, progress=False)


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA"):
        ap.fit(ap.KeyNet(8), KEYS, QUERIES, steps=1, progress=False, device="cuda")
