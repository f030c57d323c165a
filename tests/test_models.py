"""Model registry and architectures: output shapes, parameter counts derived from the papers'
layer recipes, and registry errors."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ppml.models import create_model, list_models, model_signature, register_model  # noqa: E402

torch.set_num_threads(1)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# Small configurations of every registered family: (name, kwargs, input shape, output shape).
SMALL = [
    ("resnet18_cifar", {"num_classes": 7}, (2, 3, 32, 32), (2, 7)),
    ("resnet20", {}, (2, 3, 32, 32), (2, 10)),
    ("resnet20", {"shortcut": "B", "in_chans": 6}, (2, 6, 16, 16), (2, 10)),
    ("resnet_cifar", {"depth": 8, "num_classes": 100}, (2, 3, 32, 32), (2, 100)),
    ("wideresnet", {"depth": 10, "widen_factor": 2, "dropout": 0.3}, (2, 3, 32, 32), (2, 10)),
    ("convmixer", {"dim": 32, "depth": 2, "kernel_size": 5, "patch_size": 4}, (2, 3, 32, 32), (2, 10)),
    ("convmixer", {"dim": 16, "depth": 1, "kernel_size": 4, "patch_size": 2, "in_chans": 1}, (2, 1, 8, 8), (2, 10)),
    ("vit", {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}, (2, 3, 32, 32), (2, 10)),
    ("vit", {"embed_dim": 16, "depth": 1, "num_heads": 2, "img_size": 16, "patch_size": 4, "num_classes": 3},
     (2, 3, 16, 16), (2, 3)),
    ("unet", {"width": 4, "depth": 2}, (2, 3, 16, 16), (2, 3, 16, 16)),
    ("unet", {"width": 4, "depth": 3, "in_chans": 1, "out_chans": 2, "batch_norm": False}, (1, 1, 16, 24),
     (1, 2, 16, 24)),
    ("transformation_network", {"width": 4, "depth": 2}, (2, 3, 16, 16), (2, 3, 16, 16)),
    ("pyramidnet_shakedrop", {"depth": 8, "alpha": 12, "num_classes": 7}, (2, 3, 32, 32), (2, 7)),
    ("le_adaptation", {"block_size": 4, "out_chans": 8}, (2, 3, 16, 16), (2, 8, 16, 16)),
    ("ele_adaptation", {"image_size": 16, "block_size": 4, "out_chans": 8}, (2, 3, 16, 16), (2, 8, 16, 16)),
    ("adapted_classifier", {"adaptation": "ele", "classifier": "convmixer", "image_size": 16, "out_chans": 8,
                            "classifier_kwargs": {"dim": 16, "depth": 1, "patch_size": 4}}, (2, 3, 16, 16), (2, 10)),
    ("adapted_classifier", {"adaptation": "le", "classifier": "resnet20", "num_classes": 5}, (2, 3, 32, 32),
     (2, 5)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name,kw,shape,out", SMALL, ids=[f"{s[0]}-{i}" for i, s in enumerate(SMALL)])
def test_output_shapes(name, kw, shape, out):
    torch.manual_seed(0)
    m = create_model(name, **kw).eval()
    with torch.no_grad():
        y = m(torch.rand(shape))
    assert y.shape == out
    assert torch.isfinite(y).all()


def test_every_builtin_model_is_covered():
    from ppml.models import _REGISTRY

    builtin = {n for n, f in _REGISTRY.items() if f.__module__.startswith("ppml.models.")}
    covered = {s[0] for s in SMALL} | {"convmixer_256_8", "vit_b16"}
    assert builtin == covered


def test_unet_sigmoid_range_and_raw_output():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8) * 10
    y = create_model("unet", width=4, depth=1).eval()(x)
    assert y.min() >= 0 and y.max() <= 1
    y = create_model("unet", width=4, depth=1, sigmoid=False).eval()(x)
    assert y.min() < 0 or y.max() > 1


def _bn(c):  # BatchNorm weight + bias
    return 2 * c


def test_resnet20_param_count():
    # He et al. 2016 §4.2, option A (parameter-free shortcuts): "0.27M".
    conv = lambda cin, cout, k=3: cin * cout * k * k  # noqa: E731
    stem = conv(3, 16) + _bn(16)
    stage1 = 3 * 2 * (conv(16, 16) + _bn(16))
    stage2 = conv(16, 32) + _bn(32) + conv(32, 32) + _bn(32) + 2 * 2 * (conv(32, 32) + _bn(32))
    stage3 = conv(32, 64) + _bn(64) + conv(64, 64) + _bn(64) + 2 * 2 * (conv(64, 64) + _bn(64))
    fc = 64 * 10 + 10
    expected = stem + stage1 + stage2 + stage3 + fc
    assert expected == 269_722
    assert n_params(create_model("resnet20")) == expected
    # Option B adds a 1×1 conv + BN projection at each of the two down-sampling blocks.
    assert n_params(create_model("resnet20", shortcut="B")) == expected + conv(16, 32, 1) + _bn(32) + conv(32, 64, 1) + _bn(64)


def test_resnet18_cifar_param_count():
    conv = lambda cin, cout, k=3: cin * cout * k * k  # noqa: E731
    total = conv(3, 64) + _bn(64)
    cin = 64
    for w in (64, 128, 256, 512):
        for j in range(2):
            total += conv(cin, w) + _bn(w) + conv(w, w) + _bn(w)
            if cin != w:
                total += conv(cin, w, 1) + _bn(w)
            cin = w
    total += 512 * 10 + 10
    assert total == 11_173_962
    assert n_params(create_model("resnet18_cifar")) == total


def wrn_params(depth: int, k: int, classes: int = 10) -> int:
    """Zagoruyko & Komodakis 2016: stem 3→16, three groups of n pre-activation blocks."""
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = 3 * 16 * 9
    cin = 16
    for g in range(3):
        w = widths[g + 1]
        for j in range(n):
            total += _bn(cin) + cin * w * 9 + _bn(w) + w * w * 9
            if cin != w or (j == 0 and g > 0):  # 1×1 projection where the shape changes
                total += cin * w
            cin = w
    return total + _bn(cin) + cin * classes + classes


@pytest.mark.parametrize("depth,k,paper", [(16, 1, None), (40, 4, 8.9e6), (28, 10, 36.5e6)])
def test_wideresnet_param_count(depth, k, paper):
    expected = wrn_params(depth, k)
    got = n_params(create_model("wideresnet", depth=depth, widen_factor=k))
    assert got == expected
    if paper:  # the paper's Table 1 / Table 4 rounding
        assert round(got / 1e6, 1) == pytest.approx(paper / 1e6)


def test_convmixer_256_8_param_count():
    dim, depth, k, p, classes = 256, 8, 9, 1, 10
    stem = 3 * dim * p * p + dim + _bn(dim)                       # patch conv (+bias), BN
    block = (dim * k * k + dim + _bn(dim)) + (dim * dim + dim + _bn(dim))  # depthwise, pointwise
    head = dim * classes + classes
    expected = stem + depth * block + head
    assert expected == 706_570
    assert n_params(create_model("convmixer", dim=256, depth=8, kernel_size=9, patch_size=1)) == expected
    assert n_params(create_model("convmixer_256_8")) == expected


def vit_params(D: int, depth: int, patch: int, img: int, classes: int, chans: int = 3) -> int:
    tokens = (img // patch) ** 2 + 1
    embed = chans * patch * patch * D + D + D + tokens * D        # patch conv, class token, pos-embed
    block = 2 * _bn(D) + (3 * D * D + 3 * D) + (D * D + D) + (4 * D * D + 4 * D) + (4 * D * D + D)
    return embed + depth * block + _bn(D) + D * classes + classes


def test_vit_param_count():
    assert vit_params(768, 12, 16, 224, 1000) == 86_567_656  # timm's published ViT-B/16 count
    got = n_params(create_model("vit", embed_dim=48, depth=2, num_heads=3, patch_size=4, img_size=32, num_classes=10))
    assert got == vit_params(48, 2, 4, 32, 10)


def test_vit_patch_embedding_is_blockwise():
    # The EtC-for-ViT argument needs a patch embedding that never mixes pixels of two patches.
    m = create_model("vit", embed_dim=16, depth=1, num_heads=2, patch_size=8)
    conv = m.patch_embed.proj
    assert conv.kernel_size == (8, 8) and conv.stride == (8, 8)


def unet_params(cin: int, cout: int, w: int, depth: int) -> int:
    ch = [w * 2**i for i in range(depth + 1)]
    dc = lambda a, b: a * b * 9 + _bn(b) + b * b * 9 + _bn(b)  # noqa: E731 (bias-free convs + BN)
    total = dc(cin, ch[0]) + sum(dc(ch[i], ch[i + 1]) for i in range(depth))
    total += sum(ch[i + 1] * ch[i] * 4 + ch[i] + dc(2 * ch[i], ch[i]) for i in range(depth))
    return total + ch[0] * cout + cout


def test_unet_param_count():
    assert n_params(create_model("unet", width=8, depth=3)) == unet_params(3, 3, 8, 3)
    assert unet_params(3, 3, 64, 4) == 31_037_763  # the paper-scale 64…1024 network


def test_input_size_errors():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth"):
        create_model("unet", width=2, depth=3)(torch.zeros(1, 3, 12, 12))
    with pytest.raises(ValueError, match="patch_size"):
        create_model("convmixer", dim=8, depth=1, patch_size=3)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by patch_size"):
        create_model("vit", img_size=30, patch_size=4)


def test_bad_architecture_arguments():
    with pytest.raises(ValueError, match="6n\\+2"):
        create_model("resnet_cifar", depth=21)
    with pytest.raises(ValueError, match="6n\\+4"):
        create_model("wideresnet", depth=30)
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet20", shortcut="C")


def test_unknown_model_lists_names():
    with pytest.raises(ValueError) as e:
        create_model("resnet19")
    msg = str(e.value)
    assert "resnet19" in msg and "resnet20" in msg and "convmixer" in msg and "unet" in msg


def test_unknown_kwarg_is_rejected():
    with pytest.raises(TypeError, match="unknown argument\\(s\\) widen.*accepted: .*dim"):
        create_model("convmixer", widen=3)
    with pytest.raises(TypeError, match="num_classes"):
        create_model("unet", num_classes=4)  # a U-Net has no classes


def test_register_model_and_list():
    @register_model("_test_tiny")
    def tiny(*, num_classes: int = 10, hidden: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(12, hidden), nn.Linear(hidden, num_classes))

    assert "_test_tiny" in list_models("_test*")
    assert create_model("_test_tiny", num_classes=3, hidden=2)(torch.zeros(1, 3, 2, 2)).shape == (1, 3)
    assert "hidden" in model_signature("_test_tiny").parameters
    # Re-registering the same function (a re-run notebook cell) is fine; another function is not.
    register_model("_test_tiny")(tiny)

    def other(*, num_classes: int = 10) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model("_test_tiny")(other)


def test_list_models_sorted_with_pattern():
    names = list_models()
    assert names == sorted(names)
    assert set(list_models("resnet*")) == {"resnet18_cifar", "resnet20", "resnet_cifar"}


def test_vit_pretrained_offline_raises_clear_error(monkeypatch):
    import huggingface_hub.constants as hc

    from ppml.models.vit import PretrainedUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # read at call time; the env var only at import
    with pytest.raises(PretrainedUnavailableError, match="vit_tiny_patch16_224.augreg_in21k.*pretrained=False") as e:
        create_model("vit", pretrained=True, pretrained_name="vit_tiny_patch16_224.augreg_in21k",
                     img_size=32, patch_size=4)
    assert isinstance(e.value, OSError)
    with pytest.raises(ValueError, match="pretrained_name"):
        create_model("vit", pretrained=True)
