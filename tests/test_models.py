import numpy as np
import pytest

torch = pytest.importorskip("torch")

import amips_plugins as ap  # noqa: E402
from amips_plugins.learn.models import key_fingerprint  # noqa: E402


def random_support_net(**kw):
    torch.manual_seed(0)
    model = ap.SupportNet(6, width=24, depth=3, **kw).double()
    with torch.no_grad():  # move away from the initial weights so the checks see a generic network
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_support_net_is_convex_along_random_segments():
    model = random_support_net()
    gen = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(500, 6, generator=gen, dtype=torch.float64) * 3,
        torch.randn(500, 6, generator=gen, dtype=torch.float64) * 3,
    )
    t = torch.rand(500, 1, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        mid = model.score(t * x + (1 - t) * y)
        chord = t * model.score(x) + (1 - t) * model.score(y)
    assert (mid <= chord + 1e-9).all()
    assert (chord - mid).max() > 1e-3  # strictly convex somewhere: the check is not vacuous


def test_support_net_hessian_is_psd():
    model = random_support_net()
    for seed in range(5):
        q = torch.randn(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        hess = torch.autograd.functional.hessian(lambda v: model.score(v[None])[0, 0], q)
        assert torch.linalg.eigvalsh(hess).min() > -1e-9


def test_homogeneous_wrapper_and_euler_identity():
    model = random_support_net(homogeneous=True)
    q = torch.randn(50, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        f = model.score(q)
        for t in (0.1, 2.0, 37.0):
            torch.testing.assert_close(model.score(t * q), t * f, rtol=1e-10, atol=1e-12)
        assert model.score(torch.zeros(1, 6, dtype=torch.float64)).abs().max() == 0
        euler = (model.key(q) * q).sum(-1, keepdim=True)  # <grad f(q), q> = f(q)
    torch.testing.assert_close(euler, f, rtol=1e-8, atol=1e-10)


def test_support_net_key_is_the_gradient_for_every_output():
    torch.manual_seed(3)
    model = ap.SupportNet(5, num_outputs=3, width=16, depth=2).double()
    q = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        keys = model.key(q)  # usable under no_grad
    assert keys.shape == (7, 3, 5)
    for c in range(3):
        (grad,) = torch.autograd.grad(model.score(q)[:, c].sum(), q)
        torch.testing.assert_close(keys[:, c], grad)


@pytest.mark.parametrize("num_outputs", [1, 3])
def test_keynet_score_is_inner_product_with_key(num_outputs):
    torch.manual_seed(4)
    model = ap.KeyNet(5, num_outputs=num_outputs, width=16, depth=2, residual=False)
    q = torch.randn(9, 5)
    keys = model.key(q).reshape(9, num_outputs, 5)
    torch.testing.assert_close(model.score(q), torch.einsum("ncd,nd->nc", keys, q))
    residual = ap.KeyNet(5, width=16)
    torch.testing.assert_close(residual.key(q), q)  # starts at k^ = q


def test_save_load_round_trip_and_refusals(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((20, 6)).astype(np.float32)
    model = random_support_net().float()
    model.key_fingerprint = key_fingerprint(keys)
    model.save(tmp_path / "m.pt")
    loaded = ap.load_model(tmp_path / "m.pt", keys=keys)
    q = torch.randn(4, 6)
    torch.testing.assert_close(loaded.score(q), model.eval().score(q), rtol=0, atol=0)
    assert not loaded.training and loaded.config == model.config
    with pytest.raises(ValueError, match="trained for keys"):
        ap.load_model(tmp_path / "m.pt", keys=keys[:10])
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a readable"):
        ap.load_model(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an amips_plugins model"):
        ap.load_model(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError):
        ap.load_model(tmp_path / "missing.pt")


def test_width_for_budget_hits_the_budget():
    w = ap.width_for_budget(50, 200_000, depth=4)
    params = sum(p.numel() for p in ap.SupportNet(50, width=w, depth=4).parameters())
    assert 0.9 * 200_000 < params < 1.1 * 200_000


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="positive"):
        ap.SupportNet(0)
    with pytest.raises(ValueError, match="beta"):
        ap.SupportNet(4, beta=0)


def test_max_affine_net_is_the_best_piece_at_zero_temperature():
    rng = np.random.default_rng(1)
    pieces = torch.from_numpy(rng.standard_normal((30, 5)).astype(np.float32))
    model = ap.MaxAffineNet(5, 30, temperature=0.0)
    model.pieces.data.copy_(pieces)
    q = torch.randn(40, 5)
    best = (q @ pieces.T).argmax(dim=1)
    torch.testing.assert_close(model.key(q), pieces[best], rtol=0, atol=0)
    torch.testing.assert_close(model.score(q)[:, 0], (q @ pieces.T).max(dim=1).values)
    assert model.key_multiply_adds() == (30 + 30) * 5  # every piece, then the blended ones


def test_max_affine_net_temperature_blends_towards_the_mean():
    model = ap.MaxAffineNet(2, 2, temperature=1e3)
    model.pieces.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(
        model.key(torch.tensor([[1.0, 0.2]])), torch.tensor([[0.5, 0.5]]), atol=1e-3, rtol=0
    )
    cold = ap.MaxAffineNet(2, 2, temperature=1e-3)
    cold.pieces.data.copy_(model.pieces.data)
    torch.testing.assert_close(cold.key(torch.tensor([[1.0, 0.2]])), torch.tensor([[1.0, 0.0]]))


def test_max_affine_net_save_load_and_bad_arguments(tmp_path):
    model = ap.MaxAffineNet(4, 10, temperature=0.05, blend=3)
    model.pieces.data.normal_()
    model.save(tmp_path / "m.pt")
    loaded = ap.load_model(tmp_path / "m.pt")
    q = torch.randn(6, 4)
    assert isinstance(loaded, ap.MaxAffineNet) and loaded.config == model.config
    torch.testing.assert_close(loaded.key(q), model.eval().key(q), rtol=0, atol=0)
    with pytest.raises(ValueError, match="temperature"):
        ap.MaxAffineNet(4, 10, temperature=-1)
    with pytest.raises(ValueError, match="positive"):
        ap.MaxAffineNet(4, 0)


def _tampered(model, **change) -> bytes:
    import io

    import torch

    blob = torch.load(io.BytesIO(model.to_bytes()), weights_only=True)
    for key, value in change.items():
        blob[key] = value(blob[key]) if callable(value) else value
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


def test_a_config_that_does_not_fit_its_weights_allocates_nothing():
    import resource

    model = ap.KeyNet(8, width=16, depth=1)
    huge = _tampered(model, config=lambda c: {**c, "dim": 40_000, "width": 40_000})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="do not fit"):
        ap.load_model(huge)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB
    with pytest.raises(ValueError, match="config"):
        ap.load_model(_tampered(model, config=lambda c: {**c, "bogus": 1}))


def test_non_finite_weights_are_refused():
    model = ap.SupportNet(8, width=16, depth=1)
    nan = _tampered(
        model,
        state_dict=lambda s: {
            k: v * float("nan") if v.is_floating_point() else v for k, v in s.items()
        },
    )
    with pytest.raises(ValueError, match="NaN"):
        ap.load_model(nan)
