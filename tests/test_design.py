"""``mapping.design``: the greedy design against brute-force Gaussian conditioning, the DI
effect, reachability, the baselines, and ``socmap design`` on a fitted sample run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import sample_config
from scipy.spatial.distance import cdist

from mapping.design import (
    ALL_ZONES,
    IntervalErrors,
    Target,
    _structured_correlation,
    clhs_sites,
    coverage_sites,
    greedy_design,
    parse_target,
)
from mapping.exceptions import InputError, InvalidParameter
from mapping.models.variogram import Variogram

ROOT = Path(__file__).resolve().parents[1]


def _grid(ny: int, nx: int, step: float = 1000.0):
    rows, cols = np.divmod(np.arange(ny * nx), nx)
    xy = np.column_stack([(cols + 0.5) * step, -(rows + 0.5) * step])
    return rows, cols, xy


def _errors(n: int, *, sd=0.3, mean=10.0, rng=5000.0, nugget=0.01, **kw) -> IntervalErrors:
    return IntervalErrors(
        label="0-30",
        mean=np.full(n, mean),
        std=np.full(n, sd) if np.isscalar(sd) else np.asarray(sd, float),
        variogram=Variogram("exponential", psill=0.09, range=rng, nugget=nugget),
        log=False,
        noise_var=kw.pop("noise_var", 0.02),
        **kw,
    )


def test_sequential_conditioning_equals_brute_force() -> None:
    """Blocks of one cell: the predicted variance after k sites is the Gaussian conditional
    variance of the total computed directly from the dense covariance."""
    ny, nx = 8, 9
    rows, cols, xy = _grid(ny, nx)
    n = ny * nx
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.1, 0.5, n)
    e = _errors(n, sd=sd)
    area = np.full(n, 1e6)
    zone = {"a": (cols < 5).astype(float), "b": (cols >= 5).astype(float)}
    targets = [Target("a", "0-30"), Target(ALL_ZONES, "0-30")]
    res = greedy_design(
        rows=rows,
        cols=cols,
        xy=xy,
        area=area,
        zone_weights=zone,
        errors=[e],
        targets=targets,
        n=4,
        max_blocks=n,
        n_candidates=n,
    )
    # dense model: cell errors sd_i sd_j rho(h), rho(0) = 1 (the nugget is the cell's own)
    rho = _structured_correlation(e.variogram, cdist(xy, xy))
    np.fill_diagonal(rho, 1.0)
    C = sd[:, None] * sd[None, :] * rho
    for k in range(5):
        S = res.cells[:k]
        for j, t in enumerate(targets):
            w = area * (zone["a"] if t.zone == "a" else zone["a"] + zone["b"])
            var = w @ C @ w
            if k:
                rho_ss = _structured_correlation(e.variogram, cdist(xy[S], xy[S]))
                Kss = sd[S, None] * sd[None, S] * rho_ss
                np.fill_diagonal(Kss, sd[S] ** 2 + e.noise_var)
                Kst = (
                    sd[S, None]
                    * sd[None, :]
                    * _structured_correlation(e.variogram, cdist(xy[S], xy))
                ) @ w
                var -= Kst @ np.linalg.solve(Kss, Kst)
            assert res.variance[k, j] == pytest.approx(var, rel=1e-9)
    # and every step shrinks both totals
    assert np.all(np.diff(res.variance, axis=0) < 0)


def test_shared_error_is_not_kriged_and_bounds_the_reduction() -> None:
    """With an error shared by every cell (``common_sd``) and ``n_existing`` profiles: the
    shared part of each target's variance is ``g² U² n0 / (n0 + k)``, the rest is the brute
    force conditional variance of the cells' own parts (``sd² - g²``) with the shared error
    as a site's extra noise; the targets table reports the share and the most any ``k``
    sites could remove."""
    from mapping.run.design import target_table

    ny, nx = 6, 7
    rows, cols, xy = _grid(ny, nx)
    n = ny * nx
    sd = np.random.default_rng(3).uniform(0.2, 0.5, n)
    g = 0.15
    e = _errors(n, sd=sd, common_sd=g)
    area = np.full(n, 1e6)
    zone = {"a": (rows < 3).astype(float), "b": (rows >= 3).astype(float)}
    targets = [Target("a", "0-30"), Target(ALL_ZONES, "0-30")]
    n0, k_max = 40, 3
    res = greedy_design(
        xy, rows, cols, area, zone, [e], targets, k_max,
        max_blocks=n, n_candidates=n, n_existing=n0,
    )  # fmt: skip
    own = np.sqrt(sd**2 - g**2)
    rho = _structured_correlation(e.variogram, cdist(xy, xy))
    np.fill_diagonal(rho, 1.0)
    C = own[:, None] * own[None, :] * rho
    for k in range(k_max + 1):
        S = res.cells[:k]
        for j, t in enumerate(targets):
            w = area * (zone["a"] if t.zone == "a" else zone["a"] + zone["b"])
            shared = g**2 * w.sum() ** 2 * n0 / (n0 + k)
            assert res.shared[k, j] == pytest.approx(shared, rel=1e-12)
            var = w @ C @ w
            if k:
                Kss = C[np.ix_(S, S)].copy()
                np.fill_diagonal(Kss, own[S] ** 2 + e.noise_var + g**2)
                # a site sees its cell's structured part (the nugget is the cell's own)
                rho_st = _structured_correlation(e.variogram, cdist(xy[S], xy))
                Kst = (own[S, None] * own[None, :] * rho_st) @ w
                var -= Kst @ np.linalg.solve(Kss, Kst)
            assert res.variance[k, j] - res.shared[k, j] == pytest.approx(var, rel=1e-9)
    table = target_table(res).set_index("zone")
    for j, t in enumerate(targets):
        row = table.loc[t.zone]
        share = res.shared[0, j] / res.variance[0, j]
        assert row["shared_pct"] == pytest.approx(100 * share, abs=0.005)
        floor = 100 * (1 - np.sqrt(res.shared[-1, j] / res.variance[0, j]))
        assert row["max_reduction_pct"] == pytest.approx(floor, abs=5e-4)
        # no k sites can do better than removing every error but the shared one
        assert row["expected_reduction_pct"] < row["max_reduction_pct"]


def test_first_site_is_the_best_single_site() -> None:
    ny, nx = 6, 7
    rows, cols, xy = _grid(ny, nx)
    n = ny * nx
    sd = np.where(cols >= 4, 0.6, 0.1)  # the right part is far less certain
    e = _errors(n, sd=sd)
    zone = {"z": np.ones(n)}
    res = greedy_design(
        xy,
        rows,
        cols,
        np.full(n, 1e6),
        zone,
        [e],
        [Target("z", "0-30")],
        1,
        max_blocks=n,
        n_candidates=n,
    )
    assert cols[res.cells[0]] >= 4
    gains = []
    for x in range(n):
        r = greedy_design(
            xy,
            rows,
            cols,
            np.full(n, 1e6),
            zone,
            [e],
            [Target("z", "0-30")],
            1,
            max_blocks=n,
            n_candidates=n,
            reachable=np.arange(n) == x,
        )
        gains.append(r.variance[0, 0] - r.variance[1, 0])
    assert res.variance[0, 0] - res.variance[1, 0] == pytest.approx(max(gains), rel=1e-12)


def test_target_zone_draws_the_sites() -> None:
    """With the target in the left zone and a short range, every site lies in or next to it."""
    rows, cols, xy = _grid(10, 20)
    n = len(rows)
    e = _errors(n, rng=1500.0)
    zone = {"left": (cols < 10).astype(float), "right": (cols >= 10).astype(float)}
    res = greedy_design(
        xy,
        rows,
        cols,
        np.full(n, 1e6),
        zone,
        [e],
        [Target("left", "0-30")],
        8,
        max_blocks=n,
        n_candidates=n,
    )
    assert np.all(cols[res.cells] < 11)
    assert res.range_factor()[-1, 0] < 1.0


def _ratio(d):
    """The error model's ``r(DI)`` of the two-patch tests: 1 at DI 0, 5 at DI 2."""
    return 1.0 + 2.0 * np.asarray(d)


def _two_patches():
    """Cells in two patches 100 km apart, one like the profiles (DI ~0), one unlike them
    (features ~2): ``rows, cols, xy, odd, features, di``."""
    rows, cols, xy = _grid(6, 20, step=10_000.0)
    odd = cols >= 10
    n = len(rows)
    feats = np.where(odd, 2.0, 0.0)[:, None] + np.random.default_rng(1).normal(0, 1e-3, (n, 1))
    return rows, cols, xy, odd, feats, np.abs(feats[:, 0])


def test_dissimilar_cells_are_sampled_for_the_trend() -> None:
    """Two patches far apart, one like the profiles (DI 0) and one unlike them (DI 2): with no
    spatial reach, the first site goes to the dissimilar patch and its cells' variance falls
    by the error model's ratio, r(0) / r(2)."""
    rows, cols, xy, odd, feats, di = _two_patches()
    n = len(rows)
    sd = np.sqrt(0.05 * _ratio(di))
    e = _errors(n, sd=sd, rng=1.0, nugget=0.0, features=feats, di=di, factor=_ratio)
    zone = {"z": np.ones(n)}
    res = greedy_design(
        xy,
        rows,
        cols,
        np.full(n, 1e6),
        zone,
        [e],
        [Target("z", "0-30")],
        1,
        max_blocks=n,
        n_candidates=n,
    )
    assert odd[res.cells[0]]
    assert res.gain_dissimilarity[0] > 0.9
    # uncorrelated cells: Var(T) = sum (a sd)^2; the odd cells fall from r(2) = 5 to about
    # r(0) = 1 (their DI to the new site ~ 0); the site's own cell is kriged away on top
    w = np.full(n, 1e6)
    before = np.sum((w * sd) ** 2)
    sd_after = np.where(
        odd, np.sqrt(0.05 * _ratio(np.abs(feats[:, 0] - feats[res.cells[0], 0]))), sd
    )
    after = np.sum((w * sd_after) ** 2)
    x = res.cells[0]
    after -= (w[x] * sd_after[x] ** 2) ** 2 / (sd_after[x] ** 2 + e.noise_var)
    assert res.variance[1, 0] == pytest.approx(after, rel=1e-3)
    assert res.variance[0, 0] == pytest.approx(before, rel=1e-9)


def test_cells_of_a_class_no_profile_has_are_sampled() -> None:
    """Cells of a class the profiles never saw have no DI (the error model's largest, r = 5)
    and covariates like everyone else's: only a site of their class lowers their DI (to
    their distance to it, about 0 here), and such a site lowers nobody else's."""
    rows, cols, xy, odd, _, _ = _two_patches()
    n = len(rows)
    feats = np.random.default_rng(2).normal(0, 1e-3, (n, 1))  # alike in the covariates
    di = np.where(odd, np.nan, np.abs(feats[:, 0]))
    sd = np.sqrt(0.05 * _ratio(np.where(odd, 2.0, di)))
    group = odd.astype(np.int64)
    kw = dict(sd=sd, rng=1.0, nugget=0.0, features=feats, di=di, factor=_ratio, di_undefined=2.0)
    e = _errors(n, group=group, **kw)
    w = np.full(n, 1e6)
    args = (xy, rows, cols, w, {"z": np.ones(n)})
    res = greedy_design(*args, [e], [Target("z", "0-30")], 1, max_blocks=n, n_candidates=n)
    assert odd[res.cells[0]]
    s = res.cells[0]
    sd_after = np.where(odd, np.sqrt(0.05 * _ratio(np.abs(feats[:, 0] - feats[s, 0]))), sd)
    after = np.sum((w * sd_after) ** 2) - (w[s] * sd_after[s] ** 2) ** 2 / (
        sd_after[s] ** 2 + e.noise_var
    )
    assert res.variance[1, 0] == pytest.approx(after, rel=1e-3)
    # a site of the seen class lowers the DI of the seen cells alone (by hand, as above)
    seen = greedy_design(*args, [e], [Target("z", "0-30")], 1, reachable=~odd, max_blocks=n,
                         n_candidates=n)  # fmt: skip
    x = seen.cells[0]
    d_new = np.where(odd, np.nan, np.minimum(di, np.abs(feats[:, 0] - feats[x, 0])))
    sd_seen = np.where(odd, sd, np.sqrt(0.05 * _ratio(d_new)))
    kriged = np.sum((w * sd_seen) ** 2) - (w[x] * sd_seen[x] ** 2) ** 2 / (
        sd_seen[x] ** 2 + e.noise_var
    )
    assert seen.variance[1, 0] == pytest.approx(kriged, rel=1e-6)
    # without the groups the class's cells could never be reached: no DI gain at all
    blind = greedy_design(*args, [_errors(n, **{**kw, "features": np.where(odd[:, None], np.nan, feats)})],
                          [Target("z", "0-30")], 1, max_blocks=n, n_candidates=n)  # fmt: skip
    assert blind.gain_dissimilarity[0] == 0.0
    assert blind.variance[1, 0] > 2 * res.variance[1, 0]


def test_only_reachable_cells_and_bad_arguments() -> None:
    rows, cols, xy = _grid(8, 8)
    n = len(rows)
    e = _errors(n)
    reach = rows < 2
    res = greedy_design(
        xy,
        rows,
        cols,
        np.full(n, 1e6),
        {"z": np.ones(n)},
        [e],
        [Target("z", "0-30")],
        5,
        reachable=reach,
    )
    assert reach[res.cells].all() and len(set(res.cells)) == 5
    with pytest.raises(InvalidParameter):
        greedy_design(
            xy, rows, cols, np.full(n, 1e6), {"z": np.ones(n)}, [e], [Target("z", "0-30")], 0
        )
    with pytest.raises(InputError, match="reachable"):
        greedy_design(
            xy,
            rows,
            cols,
            np.full(n, 1e6),
            {"z": np.ones(n)},
            [e],
            [Target("z", "0-30")],
            17,
            reachable=reach,
        )


def test_parse_target() -> None:
    zones, ivs = ["continuous", "sporadic"], ["0-30", "0-100"]
    assert parse_target("continuous/0-100", zones, ivs) == Target("continuous", "0-100")
    assert parse_target("all/0-30", zones, ivs) == Target(ALL_ZONES, "0-30")
    for bad, word in [
        ("tundra/0-30", "unknown zone"),
        ("continuous/0-200", "not in the run"),
        ("continuous", "ZONE/INTERVAL"),
        ("continuous/abc", "depth interval"),
    ]:
        with pytest.raises(InputError, match=word):
            parse_target(bad, zones, ivs)


def test_clhs_fills_every_stratum_and_coverage_spreads() -> None:
    rng = np.random.default_rng(3)
    X = rng.uniform(size=(5000, 3))
    idx = clhs_sites(X, 20, seed=1, iterations=60000)
    assert len(set(idx)) == 20
    for k in range(3):
        strata = np.searchsorted(np.quantile(X[:, k], np.linspace(0, 1, 21)[1:-1]), X[idx, k])
        assert len(set(strata)) >= 18  # (almost) one site per stratum of every covariate
    _, _, xy = _grid(30, 30)
    cov = coverage_sites(xy, 9, seed=0)
    assert len(set(cov)) == 9
    # 9 k-means sites on a 30 x 30 square: no two closer than a third of its side / 2
    d = cdist(xy[cov], xy[cov]) + np.eye(9) * 1e9
    assert d.min() > 30 * 1000.0 / 6


# ------------------------------------------------------------------ on a fitted run
def _config(tmp: Path) -> Path:
    cfg = sample_config(tmp / "out")
    cfg["stocks"]["depths"] = ["0-30"]
    cfg["model"]["params"]["n_estimators"] = 40
    cfg["cv"]["repeats"] = 1  # one partition's error models are enough for a design
    cfg["uncertainty"] = {"n_realizations": 20}
    cfg["scheduler"] = "threads"
    path = tmp / "sample.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mapping.config import load_config
    from mapping.run import run_stages, stage_list

    cfg_path = _config(tmp_path_factory.mktemp("design"))
    cfg = load_config(cfg_path)
    run_stages(cfg, stage_list(cfg), until="uncertainty", echo=lambda m: None)
    return cfg_path


def test_cli_writes_sites_with_expected_reductions(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyogrio

    from mapping.cli import main

    out = tmp_path / "sites.gpkg"
    code = main(
        [
            "design",
            str(fitted),
            "--n",
            "6",
            "--target",
            "isolated/0-30",
            "--target",
            "all/0-30",
            "--max-distance-km",
            "100",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    gdf = pyogrio.read_dataframe(out)
    assert len(gdf) == 6 and gdf.crs.to_epsg() == 4326
    red = gdf["reduction_isolated_0_30_pct"].to_numpy()
    assert np.all(np.diff(red) >= 0) and 0 < red[-1] < 100
    targets = pd.read_csv(out.with_name("sites_targets.csv"))
    assert set(targets["zone"]) == {"isolated", "all zones"}
    assert (targets["half_width_expected"] < targets["half_width_now"]).all()
    # the share no site observes and the most any 6 sites could give, printed per target
    assert targets["shared_pct"].between(0, 100).all()
    assert (targets["expected_reduction_pct"] < targets["max_reduction_pct"]).all()
    said = capsys.readouterr().out
    for r in targets.itertuples():
        assert (
            f"{r.zone} {r.interval} cm: range expected to shrink by "
            f"{r.expected_reduction_pct:.1f} % (at most {r.max_reduction_pct:.1f} % from any "
            f"6 sites: {r.shared_pct:.0f} % of its variance"
        ) in said
    # within 100 km of a profile
    from mapping.config import load_config
    from mapping.io import read_table

    cfg = load_config(fitted)
    tr = read_table(Path(cfg.output) / "training" / "training.parquet")
    d = cdist(gdf[["x", "y"]].to_numpy(), tr[["x", "y"]].to_numpy()).min(axis=1)
    assert d.max() <= 100_000.0
    # a run whose ranges have a local level and the zones' errors: the same prediction,
    # and a note that it leaves both out
    assert "[design] note" not in said
    from mapping.run.design import run_design

    local = cfg.model_copy(
        update={
            "uncertainty": cfg.uncertainty.model_copy(update={"level": "local", "zone_error": "cv"})
        }
    )
    lines: list[str] = []
    _, _, again, _ = run_design(local, 6, targets=["isolated/0-30", "all/0-30"],
                                max_distance_km=100, out=tmp_path / "b.gpkg", echo=lines.append)  # fmt: skip
    pd.testing.assert_frame_equal(again, targets, check_exact=False, rtol=1e-9)
    (note,) = [x for x in lines if x.startswith("[design] note")]
    assert "uncertainty.level: local and zone_error: cv" in note


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--n", "0"], "--n"),
        (["--n", "3", "--target", "tundra/0-30"], "unknown zone"),
        (["--n", "3", "--target", "all/0-100"], "not in the run"),
        (["--n", "3", "--access", "/nonexistent/cost.tif"], "access raster not found"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], word: str
) -> None:
    from mapping.cli import main

    out = tmp_path / "x.gpkg"
    assert main(["design", str(fitted), *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]
    assert not out.exists()


def test_cli_run_not_fitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mapping.cli import main

    cfg = _config(tmp_path)
    assert main(["design", str(cfg), "--n", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not fitted" in err[0]


def test_report_shows_the_proposed_sites(fitted: Path) -> None:
    from mapping.cli import main
    from mapping.config import load_config
    from mapping.report import build_report

    assert main(["design", str(fitted), "--n", "3", "--target", "all/0-30"]) == 0
    out = Path(load_config(fitted).output)
    assert (out / "design" / "sites.gpkg").exists()
    files = build_report(out)
    assert "figures/design_sites.png" in {str(k) for k in files}
    md = (out / "report" / "report.md").read_text()
    assert "3 new profile sites proposed" in md
    # the caption bounds the prediction by what any 3 sites could give
    t = pd.read_csv(out / "design" / "targets.csv").iloc[0]
    assert (
        f"all zones 0–30 cm: {t.expected_reduction_pct:.1f} % (at most "
        f"{t.max_reduction_pct:.1f} % from any 3 sites; {t.shared_pct:.0f} % of its variance"
    ) in " ".join(md.split())
    # beside them, how the predictions fared on the world suite, from the shipped table
    from mapping.report.figures import DESIGN_SUITE

    assert "figures/design_suite.png" in {str(k) for k in files}
    ref = pd.read_csv(DESIGN_SUITE)
    assert len(ref) >= 8 and set(ref["n"]) <= {50, 200} and 50 in set(ref["n"])
    assert not ref.duplicated(["suite", "world", "n"]).any()  # one row per world and N
    # the realised shrinkage is the half-widths' own, as docs/design.md tabulates it
    real = 100 * (1 - ref["half_width_after_pct"] / ref["half_width_before_pct"])
    assert np.allclose(real, ref["realised_pct"], atol=0.1)  # both rounded in the table
    rows = ref[ref["n"] == 50]
    real, pred = rows["realised_pct"], rows["predicted_pct"]
    said = (
        f"with N = 50 new profiles socmap design predicted {pred.min():.0f}-{pred.max():.0f} % "
        f"(mean {pred.mean():.1f} %) and the refit realised {real.min():.0f}-{real.max():.0f} % "
        f"(mean {real.mean():.1f} %), more than predicted in {int((real > pred).sum())} of "
        f"{len(rows)} worlds"
    )
    assert said in " ".join(md.split())
    inside = f"inside the new 90 % range in {int(ref['truth_inside'].sum())} of {len(ref)} reruns"
    assert said in " ".join(md.split()) and inside in " ".join(md.split())
    assert (out / "report" / "figures" / "design_suite.pdf").exists()
    # a targets table without its reductions: a note, no design figures, no traceback
    targets = pd.read_csv(out / "design" / "targets.csv")
    targets.drop(columns="expected_reduction_pct").to_csv(out / "design" / "targets.csv")
    files = {str(k) for k in build_report(out)}
    assert not {"figures/design_sites.png", "figures/design_suite.png"} & files
    md = " ".join((out / "report" / "report.md").read_text().split())
    assert "design/targets.csv lacks column(s) expected_reduction_pct" in md


def test_roads_layer_gives_points_along_its_lines(tmp_path: Path) -> None:
    """``--roads``: a line 100 km long becomes vertices every half cell, in the working CRS."""
    import geopandas as gpd
    import shapely
    from affine import Affine

    from mapping.grid import Grid
    from mapping.run.design import _vector_points

    grid = Grid("EPSG:6931", Affine(5000.0, 0, 0.0, 0, -5000.0, 0.0), (40, 40))
    line = shapely.LineString([(10_000.0, -10_000.0), (110_000.0, -10_000.0)])
    path = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[line], crs="EPSG:6931").to_file(path)
    pts = _vector_points(path, grid)
    assert pts[:, 0].min() == pytest.approx(10_000.0) and pts[:, 0].max() == pytest.approx(
        110_000.0
    )
    assert np.allclose(pts[:, 1], -10_000.0)
    assert np.diff(np.sort(pts[:, 0])).max() <= 2500.0 + 1e-6
    with pytest.raises(InputError, match="not found"):
        _vector_points(tmp_path / "none.gpkg", grid)


def test_a_shared_extrapolation_error_falls_with_the_di() -> None:
    """``extra_sd``: the part of each cell's variance above its in-domain level is shared by
    every cell (``(sum w x)²`` in the targets' variance, in ``shared``); a site in the
    dissimilar patch lowers its cells' DI, so their ``x`` falls to ``sqrt(v' - v_in)``, while
    each cell's own part stays its in-domain variance (kriged where the site is)."""
    rows, cols, xy, odd, feats, di = _two_patches()
    n = len(rows)
    v = 0.05 * _ratio(di)
    x = np.sqrt(v - 0.05)  # above the in-domain level r(0) = 1
    e = _errors(n, sd=np.sqrt(v), rng=1.0, nugget=0.0, features=feats, di=di, factor=_ratio,
                extra_sd=x)  # fmt: skip
    w = np.full(n, 1e6)
    res = greedy_design(xy, rows, cols, w, {"z": np.ones(n)}, [e], [Target("z", "0-30")], 1,
                        max_blocks=n, n_candidates=n)  # fmt: skip
    assert odd[res.cells[0]]
    assert res.shared[0, 0] == pytest.approx(np.sum(w * x) ** 2, rel=1e-12)
    # uncorrelated own parts at the in-domain level, plus the coherent shared sum
    assert res.variance[0, 0] == pytest.approx(np.sum(w**2 * 0.05) + np.sum(w * x) ** 2, rel=1e-9)
    s = res.cells[0]
    v_after = np.where(odd, 0.05 * _ratio(np.abs(feats[:, 0] - feats[s, 0])), v)
    x_after = np.sqrt(np.maximum(v_after - 0.05, 0.0))
    # (the block factors after a site are float32)
    assert res.shared[1, 0] == pytest.approx(np.sum(w * x_after) ** 2, rel=1e-4)
    own_after = np.sum(w**2 * 0.05) - (w[s] * 0.05) ** 2 / (0.05 + e.noise_var)
    assert res.variance[1, 0] == pytest.approx(own_after + res.shared[1, 0], rel=1e-9)
    # the coherent sum makes the shared error most of the variance, and the site removes it
    assert res.shared[0, 0] > 0.9 * res.variance[0, 0]
    assert res.variance[1, 0] < 0.1 * res.variance[0, 0]
    # no regional level: no part of the range is out of the sites' reach
    assert np.all(res.level == 0.0) and res.floor_factor()[0] == 0.0


def _beyond_the_box(n_cols: int = 20):
    """One row of cells whose single feature runs from 0 to 3 (DI units) against a training
    box [0, 1]: the cells beyond it carry the range term ``b xd²`` with ``xd = f - 1``, and
    the DI's factor is flat (only the box matters)."""
    rows, cols, xy = _grid(1, n_cols, step=10_000.0)
    f = np.linspace(0.0, 3.0, n_cols)
    b = 0.02
    rt = b * np.maximum(f - 1.0, 0.0) ** 2
    kw = dict(
        features=f[:, None], di=np.zeros(n_cols), factor=lambda d: np.ones_like(d, float),
        range_var=rt, box=(np.array([0.0]), np.array([1.0])), range_coef=b,
    )  # fmt: skip
    return rows, cols, xy, f, rt, kw


def test_a_site_beyond_the_training_range_widens_it() -> None:
    """The range term follows the box, not the DI: the best single site is the one farthest
    beyond the range, and after it every cell's term is gone (hand calculation: uncorrelated
    cells, the site's own cell kriged on top). A site inside the box leaves every term as
    it is."""
    rows, cols, xy, f, rt, kw = _beyond_the_box()
    n = len(f)
    e = _errors(n, sd=np.sqrt(0.05 + rt), rng=1.0, nugget=0.0, **kw)
    w = np.full(n, 1e6)
    args = (xy, rows, cols, w, {"z": np.ones(n)}, [e], [Target("z", "0-30")], 1)
    res = greedy_design(*args, max_blocks=n, n_candidates=n)
    s = res.cells[0]
    assert s == n - 1  # the cell at f = 3 takes the box to [0, 3]
    assert res.variance[0, 0] == pytest.approx(np.sum(w**2 * (0.05 + rt)), rel=1e-9)
    after = np.sum(w**2 * 0.05) - (w[s] * 0.05) ** 2 / (0.05 + e.noise_var)
    assert res.variance[1, 0] == pytest.approx(after, rel=1e-5)
    # the middle of the tail (f = 2) halves xd beyond it and removes the term below it
    mid = int(np.argmin(np.abs(f - 2.0)))
    inside = np.zeros(n, bool)
    inside[mid] = True
    res_mid = greedy_design(*args, max_blocks=n, n_candidates=n, reachable=inside)
    rt_mid = 0.02 * np.maximum(f - f[mid], 0.0) ** 2
    v_mid = 0.05 + rt_mid
    after = np.sum(w**2 * v_mid) - (w[mid] * v_mid[mid]) ** 2 / (v_mid[mid] + e.noise_var)
    assert res_mid.variance[1, 0] == pytest.approx(after, rel=1e-5)
    # inside the box: no term moves (the old rule scaled them with the flat DI factor too)
    inside = f <= 1.0
    res_in = greedy_design(*args, max_blocks=n, n_candidates=n, reachable=inside)
    s = res_in.cells[0]
    v = 0.05 + rt
    after = np.sum(w**2 * v) - (w[s] * v[s]) ** 2 / (v[s] + e.noise_var)
    assert res_in.variance[1, 0] == pytest.approx(after, rel=1e-9)


def test_the_range_term_shared_between_cells_falls_with_the_box() -> None:
    """With the range term in the shared extrapolation error (``extra_sd² = rt``), the
    coherent sum ``(sum w sqrt(rt))²`` is the targets' shared part, and the site that takes
    the box past every cell removes it; a sample of the cells (one per block of four)
    gives the blocks' terms exactly at the start and after the last cell's site."""
    rows, cols, xy, f, rt, kw = _beyond_the_box(40)
    n = len(f)
    e = _errors(n, sd=np.sqrt(0.05 + rt), rng=1.0, nugget=0.0, extra_sd=np.sqrt(rt), **kw)
    w = np.full(n, 1e6)
    args = (xy, rows, cols, w, {"z": np.ones(n)}, [e], [Target("z", "0-30")], 1)
    res = greedy_design(*args, max_blocks=n, n_candidates=n)
    assert res.shared[0, 0] == pytest.approx(np.sum(w * np.sqrt(rt)) ** 2, rel=1e-12)
    s = res.cells[0]
    assert f[s] > 2.9  # the last cell or its neighbour: the scores differ by the kriging only
    x_after = np.sqrt(0.02) * np.maximum(f - f[s], 0.0)
    assert res.shared[1, 0] == pytest.approx(np.sum(w * x_after) ** 2, rel=1e-6)
    assert res.shared[1, 0] < 1e-3 * res.shared[0, 0]
    last = np.arange(n) == n - 1
    kw = dict(max_blocks=10, n_candidates=n, reachable=last)
    coarse = greedy_design(*args, range_cells=10, **kw)
    full = greedy_design(*args, range_cells=n, **kw)
    np.testing.assert_allclose(coarse.shared, full.shared, rtol=1e-9, atol=1e-3)
    np.testing.assert_allclose(coarse.variance, full.variance, rtol=1e-6)
    # without the box the term falls only with the (flat) DI factor: no site lowers it
    old = greedy_design(*args, max_blocks=n, n_candidates=n, range_cells=0)
    assert old.shared[1, 0] == pytest.approx(old.shared[0, 0], rel=1e-9)


def test_the_range_term_read_from_a_fitted_run(fitted: Path) -> None:
    """The design reads each cell's range term back from the run's maps: what a log model's
    calibrated variance holds above its error model's variance without the term equals the
    error model's ``range_term`` at the cells' extrapolation distance (float32 maps), and
    the box is the AOA's training range in DI units."""
    from mapping import io
    from mapping.config import load_config
    from mapping.layout import RunFolder
    from mapping.run.design import design_inputs

    cfg = load_config(fitted)
    d = design_inputs(cfg, ["continuous/0-30"], echo=lambda m: None)
    e = d.errors[0]
    run = RunFolder(cfg.output)
    em = io.read_model(run.error_model_file("0-30"))
    aoa = io.read_model(run.aoa_file("0-30"))
    assert em.has_range_term and e.range_var is not None and e.box is not None
    X = d.cells.covariates[list(aoa.layout_.names)]
    xd = aoa.extrapolation(X)
    beyond = np.nan_to_num(xd) > 0
    assert 0 < beyond.sum() < beyond.size
    np.testing.assert_array_equal(e.range_var[~beyond], 0.0)
    mean = e.mean
    median = np.asarray(io.open_raster(run.map_file(0, 30, "median"), chunks=None)).squeeze()
    s2 = np.maximum(2 * np.log(mean / median[d.cells.rows, d.cells.cols]), 0.0)
    expected = em.range_term(xd, em.variance(s2, e.di))
    np.testing.assert_allclose(e.range_var[beyond], expected[beyond], rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(e.box[0] * aoa.mean_distance_, aoa.lower_)
    np.testing.assert_allclose(e.box[1] * aoa.mean_distance_, aoa.upper_)
    assert e.range_coef == em.range_coef and e.range_linear == em.range_linear
