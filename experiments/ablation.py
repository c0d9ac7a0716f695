"""Table 1 of the paper: vary delta, alpha, beta one at a time (x100, x10, x0.1, x0.01, x0) around the optimum.

    python -m experiments.ablation --data_dir ../shared/data/acdc/training --workdir runs/ablation \
        --schedule short --folds 0
Each of the 16 runs (the optimum + 5 factors x 3 weights; Table 1's 18 cells share the optimum row) trains in WORKDIR/<name>/foldK, resumable: finished runs are skipped, a killed
run resumes from its last epoch. Writes WORKDIR/ablation.md (Dice after, folding %) and ablation.json.
Schedules: paper (40 epochs, x8), short (10 epochs, x2), tiny (1 epoch, x1: smoke test).
"""

import dataclasses
import json
import pathlib

from absl import app, flags

from experiments import entry, flags_common
from jaxreg import experiment

flags.DEFINE_enum("schedule", "short", ["paper", "short", "tiny"], "Training schedule for every run.")
flags.DEFINE_list("folds", ["0"], "Folds to run for each setting.")
flags.DEFINE_list("runs", None, "Only these settings (e.g. opt,alpha_x0,beta_x0), in this order; unset: all 16. "
                  "Finished runs of the others are still tabulated; missing cells print as '-'.")
FLAGS = flags_common.FLAGS

SCHEDULES = {"paper": dict(epochs=40, augment=8), "short": dict(epochs=10, augment=2), "tiny": dict(epochs=1, augment=1)}
FACTORS = (("x100", 100.0), ("x10", 10.0), ("opt", 1.0), ("x0.1", 0.1), ("x0.01", 0.01), ("x0", 0.0))


def settings(base):
    out = {"opt": base}
    for term in ("delta", "alpha", "beta"):
        for tag, f in FACTORS:
            if tag != "opt":
                out[f"{term}_{tag}"] = dataclasses.replace(base, **{term: getattr(base, term) * f})
    return out


def main(argv):
    del argv
    exp = flags_common.experiment_from_flags()
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, **SCHEDULES[FLAGS.schedule]))
    root = pathlib.Path(FLAGS.workdir or "runs/ablation")
    pairs = experiment.load_pairs(exp)
    grid = settings(exp.train)
    unknown = sorted(set(FLAGS.runs or ()) - set(grid))
    if unknown:
        raise app.UsageError(f"--runs: unknown settings {unknown}; known: {sorted(grid)}")
    todo = FLAGS.runs or list(grid)
    table = {}
    for name in todo + [n for n in grid if n not in todo]:
        results = []
        for k in (int(f) for f in FLAGS.folds):
            wd = root / name / f"fold{k}"
            done = wd / "results.json"
            if done.exists():
                results.append(json.loads(done.read_text()))
            elif name in todo:
                results.append(experiment.run_fold(dataclasses.replace(exp, train=grid[name], fold=k), wd, pairs,
                                                   progress=FLAGS.progress))
        if not results:
            continue
        agg = experiment.aggregate(results)
        table[name] = {"dice": agg["dice_mean_after"]["mean"], "folding": agg["folding_percent"]["mean"]}
        print(f"{name:12s} Dice {100 * table[name]['dice']:.1f}%  folding {table[name]['folding']:.2f}%", flush=True)
    (root / "ablation.json").write_text(json.dumps({"schedule": FLAGS.schedule, "folds": FLAGS.folds,
                                                    "data": exp.data_dir or "phantom", "runs": table}, indent=2))
    lines = [f"schedule {FLAGS.schedule}, folds {','.join(FLAGS.folds)}, data {exp.data_dir or 'phantom'}", "",
             "| factor | delta Dice | delta folding | alpha Dice | alpha folding | beta Dice | beta folding |",
             "|---|---|---|---|---|---|---|"]
    for tag, _ in FACTORS:
        cells = []
        for term in ("delta", "alpha", "beta"):
            r = table.get("opt" if tag == "opt" else f"{term}_{tag}")
            cells += [f"{100 * r['dice']:.1f}%", f"{r['folding']:.3f}%"] if r else ["-", "-"]
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    (root / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    entry.run(main)
