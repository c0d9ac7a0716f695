"""Table 1 of the paper: vary delta, alpha, beta one at a time (x100, x10, x0.1, x0.01, x0) around the optimum.

    python -m experiments.ablation --data_dir ../shared/data/acdc/training --workdir runs/ablation \
        --method population --schedule paper --folds 0,1 --seeds 2
`--method single`: each of the 16 settings (x folds x seeds) trains on its own in WORKDIR/<name>/fold<K>[_seed<S>].
`--method population`: per fold and seed, the settings train at once as one population (`--population_size` at a
time) in WORKDIR/population/fold<K>_seed<S>[_part<J>], every member seeing the same batches and augmentations.
`--method hyper`: per fold and seed ONE weight-conditioned network (`--config hyper`; another preset gets
`--condition_features 64`) trains in WORKDIR/hyper/fold<K>[_seed<S>] and is scored at all 16 settings.
Resumable: finished runs are skipped, a killed run resumes from its last epoch. Writes WORKDIR/ablation.json,
ablation.md (mean +- std over folds and seeds per cell, the paper's Table 1 beside) and ablation.png (Dice and
folding against the factor, one panel per weight); methods run in the same WORKDIR stand side by side there.
Schedules: paper (40 epochs, x8), short (10 epochs, x2), tiny (1 epoch, x1: smoke test).
"""

import dataclasses
import pathlib

from absl import flags

from experiments import configs, entry, flags_common
from jaxreg import ablation, cv, figures, files
from jaxreg.errors import ConfigError
from jaxreg.training import workdir as wd

flags.DEFINE_enum("schedule", "paper", list(ablation.SCHEDULES), "Training schedule for every run.")
flags.DEFINE_enum("method", "population", ["population", "single", "hyper"], "population: the settings of a fold "
                  "and seed train at once; single: one training per setting; hyper: one weight-conditioned network "
                  "per fold and seed, scored at every setting.")
flags.DEFINE_list("folds", ["0"], "Folds to run for each setting.")
flags.DEFINE_integer("seeds", 1, "Seeds per setting and fold (initialisation and data order: seed s for both).")
flags.DEFINE_integer("population_size", 16, "--method population: members trained at once (the settings are "
                     "split into populations of at most this many).")
flags.DEFINE_integer("member_chunk", None, "--method population: members vmapped together inside the step "
                     "(default 1 on CPU: one after another, all on an accelerator).")
flags.DEFINE_list("runs", None, "Only these settings (e.g. opt,alpha_x0,beta_x0), in this order; unset: all 16. "
                  "Finished runs of the others are still tabulated; missing cells print as '-'.")
FLAGS = flags_common.FLAGS
# --method hyper on an unconditioned preset: the FiLM width of experiments/configs/hyper.py (written once, there)
HYPER_FEATURES = configs.get("hyper").train.model.condition_features


def _seeded(cfg, seed):
    return dataclasses.replace(cfg, seed=seed, data_seed=seed)


def _read(path):
    return wd.read_json(path, "results") if path.is_file() else None


def main(argv):
    del argv
    exp = flags_common.experiment_from_flags()
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, **ablation.SCHEDULES[FLAGS.schedule]))
    if FLAGS.method == "hyper" and not exp.train.conditioned:
        model = dataclasses.replace(exp.train.model, condition_features=HYPER_FEATURES)
        exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, model=model)).validate()
        print(f"--method hyper: a weight-conditioned network (condition_features {HYPER_FEATURES})", flush=True)
    root = pathlib.Path(FLAGS.workdir or "runs/ablation")
    grid = ablation.settings(exp.train)
    unknown = sorted(set(FLAGS.runs or ()) - set(grid))
    if unknown:
        raise ConfigError(f"--runs: unknown settings {unknown}; known: {sorted(grid)}")
    if FLAGS.seeds < 1 or FLAGS.population_size < 1:
        raise ConfigError("--seeds and --population_size must be >= 1")
    try:
        folds = [int(f) for f in FLAGS.folds]
    except ValueError:
        raise ConfigError(f"--folds: expected comma-separated integers; got {','.join(FLAGS.folds)!r}") from None
    for k in folds:
        dataclasses.replace(exp, fold=k).validate()
    todo = FLAGS.runs or list(grid)
    pairs = None
    results = {name: [] for name in grid}
    for k in folds:
        for s in range(FLAGS.seeds):
            tag = f"fold{k}" + (f"_seed{s}" if s else "")
            fold_exp = dataclasses.replace(exp, fold=k)
            if FLAGS.method == "hyper":
                path = root / "hyper" / tag
                names = [n for n in grid if n in todo or (path / n / "results.json").is_file()]
                pairs = cv.load_pairs(exp) if pairs is None else pairs
                done = cv.run_hyper_fold(dataclasses.replace(fold_exp, train=_seeded(exp.train, s)),
                                         {n: _seeded(grid[n], s) for n in names}, path, pairs,
                                         progress=FLAGS.progress, chunk_steps=FLAGS.chunk_steps)
                for n, res in done.items():
                    results[n].append(res)
                continue
            if FLAGS.method == "single":
                for name in list(grid):
                    path = root / name / tag
                    res = _read(path / "results.json")
                    if res is None and name in todo:
                        pairs = cv.load_pairs(exp) if pairs is None else pairs
                        res = cv.run_fold(dataclasses.replace(fold_exp, train=_seeded(grid[name], s)), path, pairs,
                                          progress=FLAGS.progress, chunk_steps=FLAGS.chunk_steps)
                    if res is not None:
                        results[name].append(res)
                continue
            parts = [todo[i:i + FLAGS.population_size] for i in range(0, len(todo), FLAGS.population_size)]
            for j, names in enumerate(parts):
                path = root / "population" / (tag + (f"_part{j}" if len(parts) > 1 else ""))
                done = {n: _read(path / n / "results.json") for n in names}
                if any(v is None or "objective" not in v for v in done.values()):  # older records: rescored
                    pairs = cv.load_pairs(exp) if pairs is None else pairs
                    done = cv.run_population_fold(fold_exp, {n: _seeded(grid[n], s) for n in names}, path, pairs,
                                                  progress=FLAGS.progress, chunk_steps=FLAGS.chunk_steps,
                                                  member_chunk=FLAGS.member_chunk)
                for n, res in done.items():
                    results[n].append(res)
    cells = ablation.summarize_cells(results)
    for name, c in cells.items():
        print(f"{name:12s} Dice {100 * c['dice']:.1f} +- {100 * c['dice_std']:.1f}%  folding {c['folding']:.3f}% "
              f"({c['runs']} runs)", flush=True)
    meta = {"method": FLAGS.method, "schedule": FLAGS.schedule, "folds": folds, "seeds": FLAGS.seeds,
            "data": exp.data_dir or "phantom"}
    root.mkdir(parents=True, exist_ok=True)
    # one ablation.json per workdir: this run's cells under "runs", every method run here under "methods"
    old = wd.read_json(root / "ablation.json", "ablation record") if (root / "ablation.json").is_file() else {}
    rec = ablation.record(old, FLAGS.method, meta, cells)
    methods = rec["methods"]
    files.write_json(root / "ablation.json", rec)
    files.write_text(root / "ablation.md", ablation.markdown(methods))
    figures.ablation_plot({name: m["runs"] for name, m in methods.items()}, root / "ablation.png",
                          f"Table 1, data {meta['data']}", ablation.PAPER_TABLE1)
    print(ablation.markdown({FLAGS.method: methods[FLAGS.method]}))


if __name__ == "__main__":
    entry.run(main)
