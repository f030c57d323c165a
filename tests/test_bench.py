"""The scheme registry (ppml.schemes) and the benchmark (ppml.bench): registry contents, a toy
scheme registered here running through the bench at tiny size with every column filled, "n/a"
semantics, cache resume, and the CLI's parsing and errors."""

from __future__ import annotations

import json

import pytest
import torch

from ppml import bench, schemes
from ppml.schemes import Encryption, get_scheme, list_schemes, register_scheme

EXPECTED = ["plain", "block-scramble", "block-scramble-set", "le", "ele", "pe", "etc-4", "etc-8", "etc-16",
            "scramblemix", "instahide", "datamix", "transformnet"]

#: a bench small enough for a unit test (seconds), same code paths as every scale
TINY = dict(n_train_per_class=4, n_test_per_class=2, epochs=1, batch_size=16,
            model_kwargs={"dim": 8, "depth": 1, "kernel_size": 3, "patch_size": 4}, adaptation_out_chans=4,
            n_compress=4, n_lpips=4, n_throughput=16, throughput_repeats=1, n_victims=8, n_victim_train=16,
            n_attacker=16, gan={"epochs": 1, "width": 4, "d_width": 4, "block_features": 4, "n_res": 1,
                                "batch_size": 8, "lr": 1e-3},
            itn={"epochs": 1, "width": 4, "depth": 1, "batch_size": 8}, itn_keys=2, jigsaw_n=1)


@pytest.fixture
def toy():
    """The README's plug-in example: a scheme in one definition (XOR with a secret pad)."""

    @register_scheme("toy-xor", kind="cipher", description="XOR with a secret pad (toy)")
    def xor(image_size, channels, seed):
        g = torch.Generator().manual_seed(seed)
        pad = torch.randint(0, 256, (channels, *image_size), generator=g).to(torch.uint8)
        return Encryption(encode=lambda x, g=None: x ^ pad, inverse=lambda y: y ^ pad,
                          key_space_bits=8.0 * pad.numel())

    yield "toy-xor"
    schemes.unregister_scheme("toy-xor")


# ------------------------------------------------------------------------------------ registry
def test_registry_holds_every_scheme_of_the_issue():
    assert [n for n in list_schemes() if n in EXPECTED] == EXPECTED
    kinds = {n: get_scheme(n).kind for n in EXPECTED}
    assert kinds["plain"] == "none" and kinds["transformnet"] == "learned"
    assert {n for n, k in kinds.items() if k == "encoder"} == {"scramblemix", "instahide", "datamix"}
    assert [get_scheme(f"etc-{b}").block_size for b in (4, 8, 16)] == [4, 8, 16]
    assert get_scheme("le").adaptation == "le" and get_scheme("ele").adaptation == "ele"
    assert get_scheme("etc-16").needs() == "none" and get_scheme("le").needs() == "LE adaptation network"
    assert "le_stats" in get_scheme("le").attacks and "jigsaw" in get_scheme("etc-4").attacks
    assert get_scheme("instahide").attacks == ("mixing",) and get_scheme("plain").attacks == ()


@pytest.mark.parametrize("name", ["plain", "block-scramble", "le", "ele", "pe", "etc-4", "etc-8", "etc-16"])
def test_registered_ciphers_invert_exactly_and_count_keys(name):
    from ppml.keys import EtCKey

    enc = get_scheme(name).make(image_size=32, channels=3, seed=1)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = enc.encode(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert torch.equal(enc.inverse(y), x)
    if name == "etc-8":
        assert enc.key_space_bits == pytest.approx(EtCKey.generate(image_size=32, block_size=8, seed=0).key_space_bits())
    assert (enc.key_space_bits == 0) == (name == "plain")


def test_key_set_scheme_counts_every_key_and_draws_per_image():
    enc = get_scheme("block-scramble-set").make(image_size=32, seed=0)
    one = get_scheme("block-scramble").make(image_size=32, seed=0)
    assert enc.key_space_bits == pytest.approx(schemes.BLOCK_SCRAMBLE_SET_SIZE * one.key_space_bits)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    enc.encode(x, torch.Generator().manual_seed(0))
    assert len(set(enc.extras["batch"].last_keys.tolist())) > 1  # each image draws its key from the set
    assert enc.truth().piece.shape[0] == 64


@pytest.mark.parametrize("name", ["scramblemix", "instahide", "datamix"])
def test_randomised_encoders_have_no_key_space_and_send_8_bit_images(name):
    enc = get_scheme(name).make(image_size=8, seed=0)
    assert enc.key_space_bits is None and enc.key_space() == "randomised" and enc.inverse is None
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    a, b = (enc.encode(x, torch.Generator().manual_seed(s)) for s in (0, 1))
    assert a.dtype == torch.uint8 and a.shape == x.shape and not torch.equal(a, b)


def test_unknown_scheme_and_bad_registration_raise_clear_errors(toy):
    with pytest.raises(ValueError, match=r"unknown scheme 'nope': registered schemes are plain, .*toy-xor"):
        get_scheme("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_scheme("le")(lambda s, c, k: None)
    with pytest.raises(ValueError, match="kind must be one of"):
        register_scheme("x", kind="magic")
    with pytest.raises(ValueError, match="unknown attack"):
        register_scheme("x", attacks=("fr", "sorcery"))
    with pytest.raises(TypeError, match="must return a ppml.schemes.Encryption"):
        register_scheme("bad-factory")(lambda size, c, seed: torch.zeros(1))
        try:
            get_scheme("bad-factory").make(image_size=8)
        finally:
            schemes.unregister_scheme("bad-factory")


# ------------------------------------------------------------------------------------ the bench
def test_toy_scheme_fills_every_column_na_where_attacks_do_not_apply_and_resumes(toy, tmp_path):
    res = bench.run_bench([toy], scale="smoke", out_dir=tmp_path, config=TINY, show_progress=False)
    assert res.schemes == ["plain", toy]  # plain is always the reference row
    rows = {r["scheme"]: r for r in res.rows()}
    row = rows[toy]
    for col in ("acc %", "Δacc pp", "JPEG85 ×", "lossless ×", "LPIPS", "key space (bits)", "enc img/s",
                "fr SSIM", "gan SSIM", "itn SSIM", "floor", "best attack − floor"):
        assert row[col] is not None and row[col] != "n/a", col
    # attacks that do not apply say so, never 0
    assert row["jigsaw SSIM"] == row["le_stats SSIM"] == row["mixing SSIM"] == "n/a"
    assert all(rows["plain"][f"{a} SSIM"] == "n/a" for a in bench.ATTACK_NAMES)
    assert rows["plain"]["Δacc pp"] == 0 and rows["plain"]["JPEG85 ×"] == 1.0 and rows["plain"]["LPIPS"] == 0.0
    assert row["key space (bits)"] == f"{8 * 3 * 32 * 32:,}"
    assert 0 < row["JPEG85 ×"] and row["LPIPS"] > 0.1  # an XOR pad destroys the image
    # every cell is one JSON file with its fingerprint and CPU time
    cell = json.loads((tmp_path / "smoke" / toy / "fr.json").read_text())
    assert cell["scale"] == "smoke" and cell["fingerprint"] and cell["cpu_s"] >= 0
    assert set(res.cpu_seconds()) >= {"accuracy", "compression", "lpips", "key_space", "throughput", "fr"}
    # resume: a second run computes nothing and gives the same table
    again = bench.run_bench([toy], scale="smoke", out_dir=tmp_path, config=TINY, show_progress=False)
    assert again.computed == [] and again.rows() == res.rows()
    # a changed setting recomputes exactly the columns that depend on it
    changed = bench.run_bench([toy], scale="smoke", out_dir=tmp_path, config={**TINY, "jpeg_quality": 50},
                              show_progress=False)
    assert sorted(changed.computed) == [("plain", "compression"), (toy, "compression")]
    # a corrupt cell is recomputed, not trusted
    (tmp_path / "smoke" / toy / "lpips.json").write_text("{truncated")
    assert bench.run_bench([toy], attacks=["fr"], scale="smoke", out_dir=tmp_path, config={**TINY, "jpeg_quality": 50},
                           show_progress=False).computed == [(toy, "lpips")]


def test_run_bench_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"unknown scheme 'nope': choose from plain, "):
        bench.run_bench(["le", "nope"], out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown attack 'zap'"):
        bench.run_bench(["le"], attacks="fr,zap", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        bench.run_bench(["le"], scale="huge", out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['epoch'\]"):
        bench.run_bench(["le"], config={"epoch": 1}, out_dir=tmp_path)


def test_parse_names_accepts_commas_spaces_and_all():
    valid = list_schemes()
    assert bench.parse_names(["le,pe", "etc-8", "le"], valid, "scheme") == ["le", "pe", "etc-8"]
    assert bench.parse_names("all", valid, "scheme") == valid
    assert bench.parse_names(None, ["a"], "attack") == ["a"]


def test_cli_lists_and_rejects_unknown_scheme_with_the_valid_names(capsys):
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in EXPECTED) and "LE adaptation network" in out
    with pytest.raises(SystemExit) as e:
        bench.main(["--schemes", "le,etc8"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown scheme 'etc8'" in err and "etc-8" in err
    with pytest.raises(SystemExit):
        bench.main(["--scale", "huge"])


def test_paper_scale_is_wired_and_needs_a_gpu(tmp_path, monkeypatch):
    assert bench.CONFIGS["paper"]["dataset"] == "cifar10" and bench.CONFIGS["paper"]["device"] == "cuda"
    assert set(bench.CONFIGS["smoke"]) == set(bench.CONFIGS["cpu"]) == set(bench.CONFIGS["paper"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no GPU is visible"):
        bench.run_bench(["le"], scale="paper", out_dir=tmp_path)
