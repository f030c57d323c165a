"""ppml.attacks.le_stats — this project's ciphertext-only key recovery for LE (not from the papers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml.attacks import le_statistics_attack, le_stats_curve
from ppml.attacks.le_stats import _channel_order, _Geometry, _objective, _swap_gains, le_nibbles
from ppml.ciphers import cipher_for
from ppml.datasets import PHOTO_SOURCES, load_dataset, photo_crops
from ppml.keys import ELEKey, LEKey, PEKey
from ppml.metrics import ssim

SOURCES = list(PHOTO_SOURCES)


@pytest.fixture(scope="module")
def split_photos() -> tuple[torch.Tensor, torch.Tensor]:
    """Victims and attacker from *different* photographs (as in notebook 03)."""
    victims = photo_crops(80, 32, seed=21, sources=SOURCES[:3])
    attacker = photo_crops(250, 32, seed=20, sources=SOURCES[3:])
    return victims, attacker


@pytest.fixture(scope="module")
def le_run(split_photos):
    victims, attacker = split_photos
    key = LEKey.generate(image_size=32, block_size=4, seed=1000)
    enc = cipher_for(key)(victims)
    return key, enc, le_statistics_attack(test_protected=enc, train_plain=attacker, block_size=4, seed=0)


def _exact(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).flatten(1).all(1).float().mean())


def test_nibble_layout_is_what_le_permutes():
    x = photo_crops(3, 8, seed=0)
    key = LEKey.generate(image_size=8, block_size=4, seed=1)
    p, c = le_nibbles(x, 4), le_nibbles(cipher_for(key)(x), 4)
    assert p.shape == (3, 2, 2, 96)
    assert np.array_equal(c, np.where(key.invert.astype(bool), 15 - p[..., key.perm], p[..., key.perm]))


def test_swap_gains_equal_brute_force():
    rng = np.random.default_rng(0)
    n = 7
    a = [rng.normal(size=(n, n)) for _ in range(3)]
    b = [rng.normal(size=(n, n)) for _ in range(3)]
    u, perm = rng.normal(size=(n, n)), rng.permutation(n)
    gain, f0 = _swap_gains(a, b, u, perm), _objective(a, b, u, perm)
    for r in range(n):
        for s in range(r + 1, n):
            q = perm.copy()
            q[[r, s]] = q[[s, r]]
            assert gain[r, s] == pytest.approx(_objective(a, b, u, q) - f0, abs=1e-9)


def test_channel_order_undoes_a_channel_shuffle(split_photos):
    _, attacker = split_photos
    for p in ([2, 1, 0], [1, 2, 0]):
        shuffled = attacker[:, p]
        q = _channel_order(shuffled, attacker)
        assert torch.equal(shuffled[:, torch.as_tensor(q)], attacker)


def test_recovers_le_key_from_other_photographs(le_run, split_photos):
    victims, _ = split_photos
    key, enc, res = le_run
    assert _exact(res.images, victims) >= 0.9
    assert float(ssim(res.images, victims).mean()) >= 0.95
    # here the recovered key is the victim's key itself, so it re-encrypts to the ciphertexts
    assert np.array_equal(res.key.perm, key.perm) and np.array_equal(res.key.invert, key.invert)
    assert torch.equal(cipher_for(res.key)(victims), enc)
    assert sorted(res.high.tolist()) == np.flatnonzero(key.perm >= 48).tolist()
    assert 0 < res.cpu_seconds < 60


def test_decrypting_with_the_recovered_key_is_exactly_the_returned_images(le_run):
    _, enc, res = le_run
    assert res.images.dtype == torch.uint8 and res.images.shape == enc.shape
    assert torch.equal(cipher_for(res.key).inverse(enc), res.images)


def test_grey_images_give_an_equivalent_key():
    """Fashion-MNIST stored as 3 identical channels: any channel order decrypts identically, so
    the recovered key may differ from the victim's but only within a pixel's channels."""
    victims = load_dataset("fashion-mnist-smoke", "test").images[:60]
    attacker = load_dataset("fashion-mnist-smoke", "train").images[:300]
    key = LEKey.generate(image_size=32, block_size=4, seed=2000)
    res = le_statistics_attack(test_protected=cipher_for(key)(victims), train_plain=attacker, block_size=4)
    assert _exact(res.images, victims) >= 0.9
    geo = _Geometry(4, 3)

    def pixel(p: np.ndarray) -> np.ndarray:  # (half, row, col) of a nibble position, channel dropped
        q = p % 48
        return np.stack([p // 48, geo.row[q], geo.col[q]], 1)

    assert np.array_equal(pixel(res.key.perm), pixel(key.perm))


@pytest.mark.parametrize("scheme", ["ELE", "PE"])
def test_other_schemes_stay_at_the_no_attack_floor(scheme, split_photos):
    victims, attacker = split_photos
    if scheme == "ELE":
        k = ELEKey.generate(image_size=32, block_size=4, seed=7)
    else:
        k = PEKey.generate(image_size=32, seed=7)
    victims = victims[:40]
    res = le_statistics_attack(test_protected=cipher_for(k)(victims), train_plain=attacker, block_size=4, restarts=2)
    mean_img = attacker.float().mean(0, keepdim=True).round().to(torch.uint8).expand_as(victims)
    floor = float(ssim(mean_img, victims).mean())
    assert float(ssim(res.images, victims).mean()) <= floor + 0.02
    assert _exact(res.images, victims) == 0.0


def test_curve_against_the_number_of_victims(split_photos):
    victims, attacker = split_photos
    enc = cipher_for(LEKey.generate(image_size=32, block_size=4, seed=1001))(victims)
    curve = le_stats_curve(test_protected=enc, test_plain=victims, train_plain=attacker[:150], counts=(10, 40))
    assert list(curve) == [10, 40]
    for row in curve.values():
        assert set(row) == {"ssim", "exact", "cpu_seconds"}
        assert -1 <= row["ssim"] <= 1 and 0 <= row["exact"] <= 1
    assert curve[40]["exact"] >= 0.9


def test_bad_input_raises_clear_errors(split_photos):
    victims, attacker = split_photos
    enc = victims[:4]
    with pytest.raises(ValueError, match="uint8"):
        le_statistics_attack(test_protected=enc.float() / 255, train_plain=attacker)
    with pytest.raises(TypeError, match="torch.Tensor"):
        le_statistics_attack(test_protected=enc.numpy(), train_plain=attacker)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        le_statistics_attack(test_protected=enc[0], train_plain=attacker)
    with pytest.raises(ValueError, match="must share"):
        le_statistics_attack(test_protected=enc, train_plain=attacker[:, :1])
    with pytest.raises(ValueError, match="not divisible by block size 5"):
        le_statistics_attack(test_protected=enc, train_plain=attacker, block_size=5)
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        le_statistics_attack(test_protected=enc, train_plain=attacker, block_size=0)
    with pytest.raises(ValueError, match="at least 2 images"):
        le_statistics_attack(test_protected=enc, train_plain=attacker[:1])
    with pytest.raises(ValueError, match="empty"):
        le_statistics_attack(test_protected=enc[:0], train_plain=attacker)
    with pytest.raises(ValueError, match="restarts"):
        le_statistics_attack(test_protected=enc, train_plain=attacker, restarts=0)
    with pytest.raises(ValueError, match="every count"):
        le_stats_curve(test_protected=enc, test_plain=victims[:4], train_plain=attacker, counts=(5,))
    with pytest.raises(ValueError, match="shape of test_protected"):
        le_stats_curve(test_protected=enc, test_plain=victims[:3], train_plain=attacker, counts=(2,))
