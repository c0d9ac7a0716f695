"""The weight-conditioned ("hyper") network: FiLM start, its loss, training that follows the weights, inference
and the CLI at chosen weights, and one fold scored at every Table 1 setting."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from jaxreg import ablation, cli, conditioning, cv, evaluation, losses, selection
from jaxreg.data import phantom_pairs
from jaxreg.inference import load_model
from jaxreg.models import RegNet
from jaxreg.training import TrainConfig, Trainer, train
from jaxreg.training.step import loss_fn, loss_weights, prepare_batch
from tests.test_cli import _files, patient  # noqa: F401 - the CLI's NIfTI patient fixture
from tests.test_train import TINY_MODEL

HYPER_MODEL = dataclasses.replace(TINY_MODEL, condition_features=16)


@pytest.fixture(scope="module")
def pairs():
    return phantom_pairs(32, seed=0, size=64)


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    """A tiny hyper model, 40 epochs x 4 steps on the phantom, one-weight-at-a-time sampling (~20 s on 2 cores)."""
    cfg = TrainConfig(epochs=40, augment=1, batch_size=8, model=HYPER_MODEL, alpha=300.0, learning_rate=3e-3,
                      hyper_axes_prob=1.0)
    workdir = tmp_path_factory.mktemp("hyper")
    trainer, state = train(cfg, pairs, workdir, progress=False)
    return cfg, trainer, state["params"], workdir


def test_a_new_conditioned_network_is_the_unconditioned_one(pairs):
    """FiLM layers start at zero and Flax names the convolutions alike: same seed, same convolutions, same output
    whatever the weights."""
    f, m = jnp.asarray(pairs.fixed[:2]), jnp.asarray(pairs.moving[:2])
    plain, hyper = RegNet(TINY_MODEL), RegNet(HYPER_MODEL)
    c = conditioning.encode(jnp.array([[0.0, 10.0, 0.1], [1.0, 1.0, 100.0]]))
    p_plain = plain.init(jax.random.key(0), f, m)
    p_hyper = hyper.init(jax.random.key(0), f, m, c)
    # give the heads weight so the outputs are not all zero
    bump = lambda tree: jax.tree.map(lambda x: x + 0.01, tree)  # noqa: E731
    for p in (p_plain, p_hyper):
        for h in ("head0", "head1", "head2"):
            p["params"][h] = bump(p["params"][h])
    out_plain, out_hyper = plain.apply(p_plain, f, m), hyper.apply(p_hyper, f, m, c)
    assert float(jnp.abs(out_plain[-1]).max()) > 0
    for a, b in zip(out_plain, out_hyper):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="condition"):
        hyper.apply(p_hyper, f, m)


def test_hyper_loss_at_the_centre_is_the_plain_loss(pairs):
    """With every ratio 1 (and fresh FiLM layers) the per-sample weighted, rescaled loss is the plain loss."""
    base = TrainConfig(model=TINY_MODEL, batch_size=4)
    cfg = dataclasses.replace(base, model=HYPER_MODEL)
    f, m = jnp.asarray(pairs.fixed[:4]), jnp.asarray(pairs.moving[:4])
    fl, ml = jnp.asarray(pairs.fixed_labels[:4], jnp.int32), jnp.asarray(pairs.moving_labels[:4], jnp.int32)
    batch = jax.jit(lambda *a: prepare_batch(*a, True, base))(jax.random.key(0), f, m, fl, ml)
    p_plain = Trainer(base, (64, 64)).init_state()["params"]
    p_hyper = Trainer(cfg, (64, 64)).init_state()["params"]
    p_plain["params"]["head2"] = jax.tree.map(lambda x: x + 0.02, p_plain["params"]["head2"])
    p_hyper["params"]["head2"] = jax.tree.map(lambda x: x + 0.02, p_hyper["params"]["head2"])
    # jitted whole (eagerly every primitive compiles on its own)
    plain = jax.jit(lambda p, b: loss_fn(p, RegNet(TINY_MODEL), b, loss_weights(base), base))
    hyper = jax.jit(lambda p, b: loss_fn(p, RegNet(HYPER_MODEL), b, loss_weights(cfg), cfg))
    want, _ = plain(p_plain, batch)
    got, _ = hyper(p_hyper, (*batch, jnp.ones((4, 3))))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # a sample at alpha x100 is divided by 100: its loss is 0.01 * (NGF + label) + the centre's curvature term
    r = jnp.tile(jnp.array([[1.0, 100.0, 1.0]]), (4, 1))
    scaled, terms = hyper(p_hyper, (*batch, r))
    w = loss_weights(cfg)
    expect = 0.01 * (w["ngf"] * terms["ngf"] + w["label"] * terms["label"]) + w["curvature"] * terms["curvature"]
    np.testing.assert_allclose(scaled, expect, rtol=1e-5)


def test_scored_objective_is_the_training_loss_at_the_weights(trained, pairs):
    """`evaluation.evaluate(..., objective_weights=...)`, batched with padding, equals `loss_fn` on the whole set
    without augmentation, times the per-sample scale the conditioned loss divides by; and it needs no retrace."""
    cfg, trainer, params, _ = trained
    test = pairs.subset(np.arange(5))
    f, m = jnp.asarray(test.fixed), jnp.asarray(test.moving)
    oh = lambda x: jax.nn.one_hot(jnp.asarray(x, jnp.int32), 4)  # noqa: E731
    loss = jax.jit(lambda p, b: loss_fn(p, trainer.model, b, loss_weights(cfg), cfg))
    for weights in ({"delta": cfg.delta, "alpha": cfg.alpha, "beta": cfg.beta},
                    {"delta": cfg.delta, "alpha": 100 * cfg.alpha, "beta": 0.0}):
        ratios = conditioning.ratios_of({k: getattr(cfg, k) for k in weights}, **weights)
        setting = dataclasses.replace(cfg, **weights)
        res, _ = evaluation.evaluate(trainer, params, test, batch_size=2, ratios=ratios,
                                     objective_weights=evaluation.objective_weights(setting))
        batch = (f, m, oh(test.fixed_labels), oh(test.moving_labels), jnp.broadcast_to(ratios, (5, 3)))
        want, terms = loss(params, batch)
        want = want * conditioning.loss_scale(ratios, cfg.hyper_range)
        assert res["objective"] == pytest.approx(float(want), rel=1e-4)
        for k in ("ngf", "curvature", "label", "dice_loss"):
            assert res[f"objective_{k}"] == pytest.approx(float(terms[k]), rel=1e-4)
    assert res["objective_label"] > 0 and res["objective_curvature"] > 0
    assert trainer.eval_terms._cache_size() == 1  # new weights are data: one program


def test_the_trained_field_follows_the_weights(trained, pairs):
    """Larger alpha: a smoother field (less curvature); larger beta: a larger field (the labels pull harder)."""
    cfg, trainer, params, _ = trained
    f, m = jnp.asarray(pairs.fixed[:16]), jnp.asarray(pairs.moving[:16])

    def field(r):
        return trainer.eval_fields(params, f, m, jnp.asarray(r, jnp.float32))

    curv = {a: float(jnp.mean(jax.vmap(losses.curvature)(field([1.0, a, 1.0])))) for a in (0.01, 1.0, 100.0)}
    assert curv[0.01] > curv[1.0] > curv[100.0]
    assert curv[0.01] > 1.3 * curv[100.0]
    mag = {b: float(jnp.abs(field([1.0, 1.0, b])).mean()) for b in (0.01, 100.0)}
    assert mag[100.0] > 1.05 * mag[0.01]


def test_load_model_answers_weights_without_recompiling(trained, pairs):
    cfg, trainer, params, workdir = trained
    model = load_model(workdir, image_shape=(64, 64))
    assert model.conditioned and model.default_weights == {"delta": 1.0, "alpha": 300.0, "beta": 5e4}
    f, m = pairs.fixed[:4], pairs.moving[:4]
    u0 = np.asarray(model(f, m))
    np.testing.assert_allclose(u0, model(f, m, alpha=300.0), atol=1e-6)  # the recipe's own weight
    u_hi = np.asarray(model(f, m, alpha=30000.0))
    want = trainer.eval_fields(params, jnp.asarray(f), jnp.asarray(m), jnp.array([1.0, 100.0, 1.0]))
    np.testing.assert_allclose(u_hi, want, atol=1e-5)
    assert np.abs(u_hi - u0).max() > 1e-3
    for beta in (0.0, 5e3, 5e5):
        model(f, m, beta=beta)
    assert model.compilations() == 1  # six weight settings, one compiled network
    with pytest.raises(ValueError, match="alpha"):
        model(f, m, alpha=-1.0)


def test_unconditioned_model_refuses_weights(pairs, tmp_path):
    cfg = TrainConfig(epochs=1, augment=1, batch_size=4, model=TINY_MODEL)
    train(cfg, phantom_pairs(4, seed=0, size=64), tmp_path, progress=False)
    model = load_model(tmp_path, image_shape=(64, 64))
    assert not model.conditioned
    with pytest.raises(ValueError, match="not weight-conditioned"):
        model(pairs.fixed[:1], pairs.moving[:1], alpha=10.0)


def test_cli_registers_at_chosen_weights(trained, patient, tmp_path, capsys):  # noqa: F811
    _, _, _, workdir = trained
    f, m, ml, fl = _files(patient)
    reports = {}
    for alpha in (3.0, 30000.0):
        out = tmp_path / f"a{alpha:g}"
        rc = cli.main(["register", "--fixed", str(f), "--moving", str(m), "--moving-labels", str(ml), "--model",
                       str(workdir), "--alpha", str(alpha), "--method", "learned", "--out", str(out)])
        assert rc == 0
        reports[alpha] = json.loads((out / "report.json").read_text())
        assert reports[alpha]["loss_weights"] == {"delta": 1.0, "alpha": alpha, "beta": 5e4}
    d_lo = np.asarray(nib.load(str(tmp_path / "a3" / "displacement.nii.gz")).dataobj)
    d_hi = np.asarray(nib.load(str(tmp_path / "a30000" / "displacement.nii.gz")).dataobj)
    assert np.abs(d_lo - d_hi).max() > 1e-3


@pytest.mark.parametrize("case", ["plain_model", "classic", "negative"])
def test_cli_weight_errors_are_one_line_exit_2(patient, tmp_path, capsys, case):  # noqa: F811
    f, m, _, _ = _files(patient)
    args = ["register", "--fixed", str(f), "--moving", str(m), "--out", str(tmp_path / "out"), "--alpha", "3000"]
    if case == "classic":
        args += ["--method", "classic"]
    elif case == "negative":
        args[-1] = "-5"
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alpha" in err
    assert not (tmp_path / "out").exists()


def test_hyper_fold_scores_every_setting_and_resumes(tmp_path, monkeypatch):
    from experiments.configs import tiny
    from jaxreg.errors import ConfigError

    exp = tiny.get_config()
    exp = dataclasses.replace(exp, train=dataclasses.replace(
        exp.train, epochs=1, model=dataclasses.replace(exp.train.model, condition_features=8)))
    grid = ablation.settings(exp.train)
    chosen = {n: grid[n] for n in ("opt", "alpha_x100", "beta_x0")}
    out = cv.run_hyper_fold(exp, chosen, tmp_path)
    assert set(out) == set(chosen)
    for name, res in out.items():
        stored = json.loads((tmp_path / name / "results.json").read_text())
        assert stored["setting"] == name and stored["alpha"] == chosen[name].alpha
        assert stored["beta"] == chosen[name].beta and 0 <= stored["dice_mean_after"] <= 1
    assert out["opt"]["dice_mean_after"] == pytest.approx(
        json.loads((tmp_path / "results.json").read_text())["dice_mean_after"], abs=1e-6)
    alpha_x100 = out["alpha_x100"]  # the objective at the setting's own weights: alpha x100 weighs the curvature
    np.testing.assert_allclose(alpha_x100["objective"], sum(
        w * alpha_x100[f"objective_{k}"] for k, w in (("ngf", exp.train.delta), ("curvature", 100 * exp.train.alpha
                                                      * exp.train.curvature_scale), ("label", exp.train.beta))),
        rtol=1e-5)
    assert out["beta_x0"]["objective"] == pytest.approx(
        out["beta_x0"]["objective_ngf"] * exp.train.delta
        + out["beta_x0"]["objective_curvature"] * exp.train.alpha * exp.train.curvature_scale, rel=1e-5)
    again = cv.run_hyper_fold(exp, chosen, tmp_path)  # read back, nothing retrained or rescored
    assert again == {n: json.loads((tmp_path / n / "results.json").read_text()) for n in chosen}
    # the records without the checkpoints (restored from docs/ on another machine): read back, not retrained
    records = tmp_path / "records"
    shutil.copytree(tmp_path, records, ignore=shutil.ignore_patterns("checkpoints", "records"))
    calls, real_run_fold = [], cv.run_fold
    monkeypatch.setattr(cv, "run_fold", lambda *a, **k: calls.append(a) or real_run_fold(*a, **k))
    assert cv.run_hyper_fold(exp, chosen, records) == again and not calls
    # without the objective (older records) they are still read back: there is no model to rescore them with
    for n in chosen:
        stored = json.loads((records / n / "results.json").read_text())
        (records / n / "results.json").write_text(json.dumps({k: v for k, v in stored.items() if k != "objective"}))
    assert cv.run_hyper_fold(exp, chosen, records)["opt"]["dice_mean_after"] == again["opt"]["dice_mean_after"]
    # another recipe is not read back, and training it would overwrite the records: refused, nothing written
    other = dataclasses.replace(exp, train=dataclasses.replace(exp.train, alpha=2 * exp.train.alpha))
    before = {p: p.read_bytes() for p in records.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="without its checkpoints"):
        cv.run_hyper_fold(other, {"opt": other.train}, records)
    assert len(calls) == 1 and before == {p: p.read_bytes() for p in records.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match="condition_features"):
        cv.run_hyper_fold(dataclasses.replace(exp, train=dataclasses.replace(
            exp.train, model=dataclasses.replace(exp.train.model, condition_features=0))), chosen, tmp_path / "x")


def test_weights_and_refinement_chosen_on_the_other_folds_score_each_fold_and_resume(tmp_path, monkeypatch):
    import subprocess
    import sys

    from experiments.configs import tiny
    from jaxreg import evaluation, fold_choice
    from jaxreg.errors import ConfigError
    from jaxreg.training import workdir as wd

    exp = tiny.get_config()
    exp = dataclasses.replace(exp, train=dataclasses.replace(
        exp.train, epochs=1, model=dataclasses.replace(exp.train.model, condition_features=8)))
    pairs = cv.load_pairs(exp)
    with pytest.raises(ConfigError, match="no finished fold"):
        fold_choice.select_hyper_weights(tmp_path, pairs, 2)
    for k in (0, 1):
        cv.run_fold(dataclasses.replace(exp, fold=k), tmp_path / f"fold{k}", pairs, progress=False)
    cands = {"recipe": {"delta": exp.train.delta, "alpha": exp.train.alpha, "beta": exp.train.beta},
             "soft": {"delta": exp.train.delta, "alpha": exp.train.alpha * 0.01, "beta": exp.train.beta * 100},
             "stiff": {"delta": exp.train.delta, "alpha": exp.train.alpha * 100, "beta": 0.0}}
    out = fold_choice.select_hyper_weights(tmp_path, pairs, 2, cands, progress=lambda *_: None)
    res = out["network_cv_weights"]
    assert out["folds"] == [0, 1] and res["pairs"] == len(pairs)
    # the recipe's setting is what each fold's own evaluation (results.json) gave
    for k in (0, 1):
        table = np.load(tmp_path / f"fold{k}" / "weights" / "recipe.npz")
        assert np.nanmean(np.nanmean(table["after"], 1)) == pytest.approx(
            json.loads((tmp_path / f"fold{k}" / "results.json").read_text())["dice_mean_after"], abs=1e-6)
    _check_nested_choice(tmp_path, "weights", cands, res)
    # a hundredth of the curvature weight and 100x the label weight folds at least as much as 100x the curvature weight
    assert out["candidates"]["stiff"]["folding_percent"] <= out["candidates"]["soft"]["folding_percent"]
    pooled = np.loadtxt(tmp_path / "pairs_network_cv_weights.csv", delimiter=",", skiprows=1,
                        usecols=range(4, 11))
    assert len(pooled) == len(pairs) and res["chosen_on_all"] in cands

    def no_model(*a, **k):
        raise AssertionError("a cached setting was scored again")

    monkeypatch.setattr(wd, "load_trained", no_model)
    again = fold_choice.select_hyper_weights(tmp_path, pairs, 2, cands, progress=lambda *_: None)
    assert again["network_cv_weights"]["dice_mean_after"] == res["dice_mean_after"]
    monkeypatch.undo()
    # the entry point writes the report; an unconditioned CV is a one-line error
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "experiments.hyper_weights", "--workdir", str(tmp_path), "--num_folds", "2",
           "--alpha_factors", "1,0.01", "--beta_factors", "1"]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Chosen per fold" in (tmp_path / "hyper_weights.md").read_text()
    plain = tmp_path / "plain"
    cv.run_fold(dataclasses.replace(tiny.get_config(), train=dataclasses.replace(tiny.get_config().train, epochs=1)),
                plain / "fold0", pairs, progress=False)
    bad = subprocess.run(cmd[:4] + [str(plain)] + cmd[5:], cwd=root, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "weight-conditioned" in bad.stderr
    assert evaluation.results_path(tmp_path, "network_cv_weights").is_file()
    # the refinement chosen on the other fold, from the same fold models (at the recipe's weights)
    from jaxreg import classic

    refines = {"additive": (classic.ClassicConfig(max_iters=(2, 2, 2)), False),
               "composed": (classic.ClassicConfig(alpha=0.5, levels=(1,), max_iters=(3,)), True)}
    ref = fold_choice.select_refinement(tmp_path, pairs, 2, refines, progress=lambda *_: None)
    _check_nested_choice(tmp_path, "refine", refines, ref["refine_cv"], fold_choice.REFINE_TOLERANCE)
    for k in (0, 1):  # the network alone is each fold's own evaluation
        table = np.load(tmp_path / f"fold{k}" / "refine" / "network.npz")
        assert np.nanmean(np.nanmean(table["after"], 1)) == pytest.approx(
            json.loads((tmp_path / f"fold{k}" / "results.json").read_text())["dice_mean_after"], abs=1e-6)
    assert ref["network"]["dice_mean_after"] == pytest.approx(out["candidates"]["recipe"]["dice_mean_after"], abs=1e-6)
    assert ref["refine_cv"]["dice_mean_after"] != ref["network"]["dice_mean_after"]  # the refinement moved fields
    with pytest.raises(ConfigError, match="network"):
        fold_choice.select_refinement(tmp_path, pairs, 2, {"network": refines["additive"]}, progress=lambda *_: None)
    # records without checkpoints: a fold with every cached table is scored from them, one without is skipped
    records = tmp_path / "records"
    for k in (0, 1):
        shutil.copytree(tmp_path / f"fold{k}", records / f"fold{k}",
                        ignore=shutil.ignore_patterns("checkpoints", *(("refine",) if k else ())))

    def no_score(*a):
        raise AssertionError("a cached table was computed again")

    lines = []
    scored = fold_choice.fold_tables(records, pairs, 2, {"network": None, **refines}, no_score, "refine",
                                     progress=lines.append)
    assert scored["folds"] == [0] and scored["skipped_folds"] == [1] and "fold 1: skipped" in lines[0]
    assert len(scored["pairs"]) == int((selection.pair_folds(pairs, 2, exp.fold_seed) == 0).sum())
    shutil.rmtree(records / "fold0" / "refine")
    with pytest.raises(ConfigError, match="no finished fold has its checkpoint"):
        fold_choice.fold_tables(records, pairs, 2, refines, no_score, "refine", progress=lines.append)
    cmd = [sys.executable, "-m", "experiments.refine_cv", "--workdir", str(tmp_path), "--num_folds", "2",
           "--candidates", "additive_default,composed_a2_it20"]
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    text = (tmp_path / "refine_cv.md").read_text()
    assert "| composed_a2_it20 |" in text and "network alone" in text and "composed_a0.5_l2" not in text
    bad = subprocess.run(cmd[:-1] + ["composed_a7"], cwd=root, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "composed_a7" in bad.stderr and "Traceback" not in bad.stderr


def _check_nested_choice(root, cache, cands, res, tolerance=None):
    """Each of 2 folds is scored with the best candidate on the OTHER fold, or with `tolerance` the fastest within
    it of the best (naive, from the cached tables and their seconds a pair)."""
    from jaxreg import fold_choice

    tables = {(k, n): np.load(root / f"fold{k}" / cache / f"{n}.npz") for k in (0, 1) for n in cands}
    cost = {n: sum(float(tables[k, n]["seconds"]) * len(tables[k, n]["folding"]) for k in (0, 1)) for n in cands}
    for k in (0, 1):
        scores = {}
        for name in cands:
            t = tables[1 - k, name]
            ok = 100 * t["folding"].mean() < fold_choice.MAX_FOLDING_PERCENT
            scores[name] = (ok, np.nanmean(np.nanmean(t["after"], 1)))
        pool = [n for n in cands if scores[n][0]] or list(cands)
        want = max(pool, key=lambda n: scores[n][1])
        if tolerance is not None:
            want = min((n for n in pool if scores[n][1] >= scores[want][1] - tolerance), key=cost.get)
        assert res["chosen_per_fold"][str(k)] == want
        mine = np.load(root / f"fold{k}" / cache / f"{res['chosen_per_fold'][str(k)]}.npz")
        assert res["dice_mean_after_per_fold"][str(k)] == pytest.approx(
            np.nanmean(np.nanmean(mine["after"], 1)), abs=1e-6)
