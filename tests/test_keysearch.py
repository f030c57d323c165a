"""Key search (paper 05): Algorithm 1, Eq. (1), the inversion-ratio keys and the metric curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml.papers.key_generation import keysearch as ks
from ppml.ciphers import LE, cipher_for
from ppml.keys import BlockScrambleKey, ELEKey, EtCKey, LEKey, PEKey

torch.set_num_threads(1)


def mae(x, y):
    return (x - y).abs().flatten(1).mean(1)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls,bs", [(PEKey, None), (EtCKey, 4), (LEKey, 4), (ELEKey, 4), (BlockScrambleKey, 4)])
def test_best_key_is_the_argmax_and_scores_are_eq1(images, cls, bs):
    res = ks.best_key(cls, images, trials=6, metric=mae, block_size=bs, seed=3)
    assert res.scores.shape == (6,) and res.best_index == int(np.argmax(res.scores))
    assert res.key == res.key_at(res.best_index) and isinstance(res.key, cls)
    for j in range(6):  # every score is Eq. (1) of that trial's key
        k = res.key_at(j)
        expected = float(mae(images.float() / 255, cipher_for(k)(images).float() / 255).double().mean())
        assert res.scores[j] == pytest.approx(expected, abs=1e-9)
        assert ks.pih_score(k, images, mae) == pytest.approx(expected, abs=1e-9)


def test_prefix_property_and_seeding(images):
    r12 = ks.best_key(LEKey, images, trials=12, metric=mae, block_size=4, seed=7)
    r4 = ks.best_key(LEKey, images, trials=4, metric=mae, block_size=4, seed=7)
    assert np.array_equal(r12.scores[:4], r4.scores)
    assert np.array_equal(r12.running_best()[3], r4.best_score)
    assert np.array_equal(ks.best_key(LE, images, trials=4, metric=mae, block_size=4, seed=7).scores, r4.scores)  # cipher class
    other = ks.best_key(LEKey, images, trials=4, metric=mae, block_size=4, seed=8)
    assert not np.array_equal(other.scores, r4.scores)
    fresh = [ks.best_key(LEKey, images, trials=2, metric=mae, block_size=4).scores for _ in range(2)]
    assert not np.array_equal(*fresh)  # OS entropy by default


def test_ties_keep_the_earliest_and_minimize(images):
    const = lambda x, y: torch.ones(x.shape[0])
    assert ks.best_key(PEKey, images, trials=5, metric=const, seed=0).best_index == 0
    res = ks.best_key(PEKey, images, trials=8, metric=mae, seed=0, maximize=False)
    assert res.best_index == int(np.argmin(res.scores))
    assert res.running_best().tolist() == np.minimum.accumulate(res.scores).tolist()


def test_running_best_rows():
    a = np.array([[0.1, 0.3, 0.2], [0.5, 0.4, 0.6]])
    assert ks.running_best(a).tolist() == [[0.1, 0.3, 0.3], [0.5, 0.5, 0.6]]


def test_repr_hides_key_material(images):
    res = ks.best_key(PEKey, images, trials=2, metric=mae, seed=0)
    text = repr(res)
    assert res.key.fingerprint in text and "negpos" not in text and "[" not in text


def test_search_repeats_are_independent(images):
    runs = ks.search_repeats(PEKey, images, trials=3, repeats=3, metric=mae, seed=1)
    assert len({tuple(r.scores) for r in runs}) == 3
    again = ks.search_repeats(PEKey, images, trials=3, repeats=3, metric=mae, seed=1)
    assert all(np.array_equal(a.scores, b.scores) for a, b in zip(runs, again))


def test_lpips_default_and_bound_equal_plain_lpips():
    from ppml.datasets import photo_crops
    from ppml.metrics import lpips

    x = photo_crops(6, 32, seed=2)
    res = ks.best_key(PEKey, x, trials=3, seed=0, batch_size=4)  # default metric: LPIPS-alex, 2 chunks
    for j in range(3):
        y = cipher_for(res.key_at(j))(x)
        assert res.scores[j] == pytest.approx(float(lpips(x, y).double().mean()), abs=1e-5)


def test_errors(images):
    with pytest.raises(ValueError, match="needs a block size: pass block_size"):
        ks.best_key(LEKey, images, trials=2, metric=mae)
    with pytest.raises(ValueError, match="trials must be an int >= 1"):
        ks.best_key(PEKey, images, trials=0, metric=mae)
    with pytest.raises(TypeError, match="expected a key class"):
        ks.best_key("le", images, metric=mae)
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        ks.best_key(PEKey, images.float(), metric=mae)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        ks.best_key(PEKey, images[0], metric=mae)
    with pytest.raises(ValueError, match="one score per image"):
        ks.best_key(PEKey, images, trials=1, metric=lambda x, y: (x - y).mean())
    with pytest.raises(TypeError, match="metric must be a callable"):
        ks.best_key(PEKey, images, metric=3)
    with pytest.raises(ValueError, match="ratio must be a number in"):
        ks.inversion_key(8, 1.5)
    with pytest.raises(ValueError, match="trial must be in"):
        ks.best_key(PEKey, images, trials=2, metric=mae, seed=0).key_at(2)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.97, 1.0])
def test_inversion_key_exact_fraction_and_involution(images, ratio):
    key = ks.inversion_key((8, 8), ratio, seed=4)
    assert int(key.negpos.sum()) == round(ratio * 3 * 64) and not key.channel_perm.any()
    y = ks.invert_fraction(images, ratio, seed=4)
    changed = (y != images) | (images == 127) | (images == 128)  # 127 <-> 128 always change
    assert torch.equal(y ^ images == 255, torch.from_numpy(key.negpos.astype(bool))[None].expand_as(images))
    assert torch.equal(ks.invert_fraction(y, ratio, seed=4), images)  # v -> 255 - v twice
    assert changed.any() or ratio == 0.0


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_inversion_key_pixel_unit_inverts_whole_pixels(images, ratio):
    key = ks.inversion_key((8, 8), ratio, seed=4, unit="pixel")
    assert int(key.negpos[0].sum()) == round(ratio * 64)
    assert (key.negpos == key.negpos[:1]).all()  # every channel of a chosen pixel
    grey = images[:, :1].expand(-1, 3, -1, -1).contiguous()
    y = ks.invert_fraction(grey, ratio, seed=4, unit="pixel")
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])  # grey stays grey
    assert torch.equal(ks.invert_fraction(y, ratio, seed=4, unit="pixel"), grey)
    with pytest.raises(ValueError, match="unit must be one of 'value', 'pixel'"):
        ks.inversion_key(8, ratio, unit="channel")


def test_metric_curves_mse_is_exact_for_constant_images():
    x = torch.full((3, 3, 8, 8), 10, dtype=torch.uint8)
    ratios = [0.0, 0.25, 0.5, 1.0]
    c = ks.metric_curves(x, ratios, {"mse": lambda a, b: ((a - b) ** 2).flatten(1).mean(1),
                                     "set": lambda a, b: float((a - b).abs().mean())}, repeats=2, batch_size=2)
    expected = np.array([round(r * 192) / 192 * (235 / 255) ** 2 for r in ratios])
    assert np.allclose(c["mse"], expected[None], atol=1e-7)
    assert np.allclose(c["set"], (np.array([round(r * 192) / 192 for r in ratios]) * 235 / 255)[None], atol=1e-6)


def test_normalise_curve():
    assert ks.normalise_curve([1.0, 3.0, 2.0]).tolist() == [0.0, 1.0, 0.5]
    out = ks.normalise_curve([np.inf, 5.0, 5.0])
    assert np.isnan(out[0]) and out[1:].tolist() == [0.0, 0.0]
