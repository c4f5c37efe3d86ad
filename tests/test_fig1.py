"""scripts/fig1.py, the paper's Figure 1, in its quick form: it runs through, writes its
three pictures and its numbers, and even after a few steps shows what the figure is
about (clipped critics nearly flat, their layer gradients vanishing toward the input)."""

from __future__ import annotations

import json

from tests.conftest import REPO


def test_fig1_quick_writes_its_pictures_and_numbers(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fig1", REPO / "scripts" / "fig1.py")
    assert spec is not None and spec.loader is not None
    fig1 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig1)
    out = tmp_path / "out"
    fig1.main(["--quick", "--out", str(out), "--json", str(tmp_path / "fig1.json")])
    from PIL import Image

    sizes = {"fig1a_value_surfaces.png": (1100, 726), "fig1b_layer_grads.png": (660, 440)}
    for name, size in sizes.items():
        assert Image.open(out / name).size == size, name
    assert Image.open(out / "fig1b_weights.png").size == (660, 484)  # two panels
    res = json.loads((tmp_path / "fig1.json").read_text())
    assert len(res["value_surfaces"]) == 6 and len(res["layer_grads"]) == 4
    for r in res["value_surfaces"]:
        if r["method"].startswith("weight clipping"):
            # every weight of a 3×512 MLP within ±0.01: the critic is all but constant
            assert abs(r["wasserstein"]) < 1e-3 and r["grad_norm"] < 1e-2, r
    by_method = {r["method"]: r for r in res["layer_grads"]}
    for c in ("0.01", "0.001"):
        r = by_method[f"weight clipping (c = {c})"]
        assert len(r["norms"]) == 13  # 12 hidden layers and the output layer
        # each layer of ±c weights shrinks the gradient on its way to the input
        assert all(a < b for a, b in zip(r["norms"][1:], r["norms"][2:], strict=False)), r
        assert 0 < r["norms"][0] < 1e-10 and r["at_clip"] > 0.85
    assert by_method["gradient penalty (λ = 10)"]["at_clip"] is None
