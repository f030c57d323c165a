"""ITN-Attack (ppml.attacks.itn): an MSE-trained U-Net that inverts a protection from known pairs."""

from __future__ import annotations

import pytest
import torch

from ppml.attacks import itn_attack
from ppml.attacks.itn import inverse_network_loss
from ppml.datasets import photo_crops


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.float() - b.float()) / 255).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse)).mean())


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return photo_crops(160, size=16, seed=3)


def test_inverts_a_known_invertible_protection(crops):
    # Protection = negative image (255 - x). From 128 pairs the attack must learn to undo it
    # on 32 unseen images far better than the protected images themselves match the plain ones.
    train, test = crops[:128], crops[128:]
    est, net = itn_attack(train_protected=255 - train, train_plain=train, test_protected=255 - test, epochs=15, width=8,
                          depth=1, batch_size=16, lr=1e-2,
                          seed=0, progress=False, return_model=True)
    assert est.dtype == torch.uint8 and est.shape == test.shape
    assert not net.training
    before, after = _psnr(255 - test, test), _psnr(est, test)
    assert before < 12 and after > 20, (before, after)


def test_output_kind_follows_test_input(crops):
    x = crops[:16]
    kw = dict(epochs=1, width=4, depth=1, batch_size=8, progress=False)
    est_f = itn_attack(train_protected=255 - x, train_plain=x, test_protected=(255 - x[:3]).double() / 255, **kw)
    assert est_f.dtype == torch.float64 and est_f.min() >= 0 and est_f.max() <= 1
    est_u = itn_attack(train_protected=(255 - x).float() / 255, train_plain=x, test_protected=255 - x[:3],
                       **kw)  # float pairs, uint8 test
    assert est_u.dtype == torch.uint8 and est_u.shape == (3, 3, 16, 16)


def test_channels_may_differ(crops):
    x = crops[:8]
    six = torch.cat([x, 255 - x], dim=1)  # e.g. nibble planes: 6 channels in, RGB out
    est = itn_attack(train_protected=six, train_plain=x, test_protected=six[:2], epochs=1, width=4, depth=1,
                     batch_size=8, progress=False)
    assert est.shape == (2, 3, 16, 16)


def test_same_seed_same_result(crops):
    x = crops[:16]
    kw = dict(epochs=1, width=4, depth=1, batch_size=8, progress=False, seed=5)
    assert torch.equal(itn_attack(train_protected=255 - x, train_plain=x, test_protected=255 - x[:4], **kw),
                       itn_attack(train_protected=255 - x, train_plain=x, test_protected=255 - x[:4], **kw))


def test_loss_is_mse_on_unit_scale():
    y = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    out = inverse_network_loss(torch.nn.Identity(), torch.tensor([[[[0.5, 0.5]]]]), y)
    assert float(out) == pytest.approx(0.25)


def test_errors(crops):
    x = crops[:8]
    kw = dict(epochs=1, width=4, depth=1, progress=False)
    with pytest.raises(ValueError,
                       match=r"train_plain, train_protected must have the same length \(they are pairs\), got 7, 8"):
        itn_attack(train_protected=x, train_plain=x[:7], test_protected=x, **kw)
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*depth = 32; use depth <= 4"):
        itn_attack(train_protected=x, train_plain=x, test_protected=x, epochs=1, width=4, depth=5)
    with pytest.raises(ValueError, match=r"train_protected must lie in \[0, 1\].*x / 255"):
        itn_attack(train_protected=x.float(), train_plain=x, test_protected=x, **kw)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        itn_attack(train_protected=x.numpy(), train_plain=x, test_protected=x, **kw)
    with pytest.raises(ValueError, match="test_protected images .* differ"):
        itn_attack(train_protected=x, train_plain=x, test_protected=x[:, :, :8, :8], **kw)
    with pytest.raises(ValueError, match=r"train_protected must be a batch tensor of shape \(N, C, H, W\)"):
        itn_attack(train_protected=x[0], train_plain=x, test_protected=x, **kw)
    with pytest.raises(ValueError, match="test_protected must hold at least one image"):
        itn_attack(train_protected=x, train_plain=x, test_protected=x[:0], **kw)
    with pytest.raises(ValueError, match="uint8 or float"):
        itn_attack(train_protected=x.long(), train_plain=x, test_protected=x, **kw)


def test_ssim_curve_against_steps(crops):
    """eval_every / eval_fn record the attack's progress; the last point scores the returned
    estimates, and training the known inversion raises PSNR along the curve."""
    train, test = crops[:64], crops[64:72]
    est, hist = itn_attack(train_protected=255 - train, train_plain=train, test_protected=255 - test, epochs=4, width=8,
                           depth=1, batch_size=16, lr=1e-2,
                           progress=False, eval_every=4, eval_fn=lambda r: _psnr(r, test), return_history=True)
    assert hist["step"] == [4, 8, 12, 16] and len(hist["eval"]) == len(hist["cpu_seconds"]) == 4
    assert hist["eval"][-1] == pytest.approx(_psnr(est, test)) and hist["eval"][-1] > hist["eval"][0]
    assert hist["cpu_seconds"] == sorted(hist["cpu_seconds"])
    with pytest.raises(ValueError, match="needs eval_fn"):
        itn_attack(train_protected=255 - train, train_plain=train, test_protected=255 - test, epochs=1, width=4,
                   depth=1, progress=False, eval_every=2)
