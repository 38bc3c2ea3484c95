"""Tests for studies.plots: the panels and line styles of each figure on hand-made data, the
placeholders for empty input, and that saved files are real PDFs (TrueType fonts embedded)
and PNGs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from studies import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curves_frame(variants: dict[str, str], depths=(20, 56), seeds=(0, 1, 2)) -> pd.DataFrame:
    """Long-format curves: variant -> arch; error falls with iterations, test above train."""
    rows = []
    for (variant, arch), depth, seed in (
        (vs, d, s) for vs in variants.items() for d in depths for s in seeds
    ):
        for it in (100, 200, 300, 400):
            base = 40.0 * 100 / it + depth / 20 + seed * 0.1
            rows.append(
                dict(
                    variant=variant,
                    arch=arch,
                    depth=depth,
                    seed=seed,
                    iteration=it,
                    train_error=base - 2.0,
                    test_error=base + 3.0,
                )
            )
    return pd.DataFrame(rows)


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_fig6_plain_beside_resnet():
    fig = plots.fig6_curves(
        curves_frame({"resnet": "resnet", "plain": "plain"}), paper={20: 8.75, 56: 6.97}
    )
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["plain", "ResNet"]  # as in the paper
    for ax in axes:
        lines = [ln for ln in ax.get_lines() if ln.get_linestyle() in ("-", "--")]
        dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
        bold = [ln for ln in lines if ln.get_linestyle() == "-"]
        assert len(dashed) == len(bold) == 2  # one train and one test line per depth
        assert all(b.get_linewidth() > d.get_linewidth() for b, d in zip(bold, dashed))
        # min-max bands over the three seeds, one per depth
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
        assert ax.get_xlabel() == "iterations" and ax.get_ylabel() == "error (%)"
    # The test line is the mean over seeds at each iteration.
    data = curves_frame({"resnet": "resnet"})
    want = data[data["depth"] == 20].groupby("iteration")["test_error"].mean()
    got = [ln for ln in axes[1].get_lines() if ln.get_label() == "ResNet-20"][0]
    assert np.allclose(got.get_ydata(), want.to_numpy())
    # The paper's Table 6 numbers appear only in the ResNet panel (dotted).
    assert not any(ln.get_linestyle() == ":" for ln in axes[0].get_lines())
    assert sum(ln.get_linestyle() == ":" for ln in axes[1].get_lines()) == 2


def test_fig6_one_panel_per_variant_when_an_arch_has_several():
    fig = plots.fig6_curves(
        curves_frame({"pool": "resnet", "no_pool": "resnet"}, seeds=(0,)),
        order=["no_pool", "pool"],
    )
    assert [ax.get_title() for ax in visible_axes(fig)] == ["no_pool (ResNet)", "pool (ResNet)"]
    # One seed: no band.
    assert not any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)


def test_edf_one_panel_per_depth_one_step_line_per_variant():
    values = pd.DataFrame(
        dict(
            variant=["a"] * 3 + ["b"] * 3 + ["a"] * 2,
            depth=[20] * 6 + [56] * 2,
            error=[7.1, 7.3, 7.2, 7.6, 7.5, np.nan, 6.9, 7.0],
        )
    )
    fig = plots.edf(values, order=["a", "b"], paper={20: 8.75})
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == ["depth 20", "depth 56"]
    labels = [ln.get_label() for ln in axes[0].get_lines()]
    assert labels == ["a (n = 3)", "b (n = 2)", "paper (Table 6)"]  # the NaN run is dropped
    assert [ln.get_label() for ln in axes[1].get_lines()] == ["a (n = 2)"]


def test_forest_differences_and_intervals():
    comps = pd.DataFrame(
        dict(
            variant=["x", "y", "x"],
            depth=[20, 20, 56],
            diff=[0.4, -0.1, 0.2],
            ci_low=[0.1, -0.5, np.nan],
            ci_high=[0.7, 0.3, np.nan],
            n=[5, 5, 1],
            p_holm=[0.01, 0.6, np.nan],
        )
    )
    fig = plots.forest(comps, order=["x", "y"], baseline="base")
    ax20, ax56 = visible_axes(fig)
    assert [t.get_text() for t in ax20.get_yticklabels()] == [
        "x (n=5, p_Holm=0.01)",
        "y (n=5, p_Holm=0.6)",
    ]
    assert "variant - base" in ax20.get_xlabel()
    # x at the top (y = 1), y below (y = 0); the interval runs from ci_low to ci_high.
    points = [ln for ln in ax20.get_lines() if ln.get_marker() == "o"]
    xs = np.concatenate([ln.get_xdata() for ln in points])
    assert sorted(xs) == pytest.approx([-0.1, 0.4])
    segments = [seg for c in ax20.collections for seg in c.get_segments()]
    spans = sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in segments)
    assert spans == [(-0.5, 0.3), (0.1, 0.7)]
    # Depth 56: no interval (n = 1): a hollow point only.
    assert not any(c.get_segments() for c in ax56.collections)


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.fig6_curves(pd.DataFrame()),
        lambda: plots.edf(pd.DataFrame(columns=["variant", "depth", "error"])),
        lambda: plots.forest(pd.DataFrame()),
        lambda: plots.forest(
            pd.DataFrame(dict(variant=["x"], depth=[20], diff=[np.nan], ci_low=[1], ci_high=[2]))
        ),
    ],
)
def test_empty_input_gives_a_placeholder(make):
    fig = make()
    assert len(fig.axes) == 1 and fig.axes[0].texts


def test_save_writes_truetype_pdf_and_png(tmp_path):
    fig = plots.forest(
        pd.DataFrame(dict(variant=["x"], depth=[20], diff=[0.3], ci_low=[0.1], ci_high=[0.5]))
    )
    paths = plots.save(fig, tmp_path / "sub" / "forest")
    assert [p.name for p in paths] == ["forest.pdf", "forest.png"]
    pdf, png = (p.read_bytes() for p in paths)
    assert pdf[:5] == b"%PDF-" and b"/FontFile2" in pdf  # TrueType (Type 42) embedded
    assert b"/Type3" not in pdf
    assert png[:8] == PNG_MAGIC and len(png) > 1000
