"""Reports: a fold's result as text (`format_results`), mean +- std over folds (`aggregate`), markdown CV tables."""

from __future__ import annotations

import numpy as np


def subgroup_name(key: str) -> str:
    """Printed name of a subgroup key: "ed_to_es" -> "ED->ES", "group_dcm" -> "DCM", "apex" -> "apex"."""
    if "_to_" in key:
        return key.upper().replace("_TO_", "->")
    return key.removeprefix("group_").upper() if key.startswith("group_") else key


def format_results(res: dict) -> str:
    lines = [f"{res['pairs']} test pairs ({res['patients']} patients), fold {res.get('fold', '-')}"]
    lines.append(f"{'':10s} {'LV':>7s} {'RV':>7s} {'MYO':>7s} {'mean':>7s}")
    for tag in ("before", "after"):
        lines.append(f"{'Dice ' + tag:10s} " + " ".join(f"{100 * res[f'dice_{n}_{tag}']:6.1f}%"
                                                     for n in ("LV", "RV", "MYO", "mean")))
    groups = [k.removeprefix("dice_mean_after_") for k in res if k.startswith("dice_mean_after_")]
    for title, keys in (("by direction (moving->fixed)", [g for g in groups if "_to_" in g]),
                        ("by slice region", [g for g in ("base", "mid", "apex") if g in groups]),
                        ("by pathology group", sorted(g for g in groups if g.startswith("group_")))):
        if keys:
            lines.append(f"mean Dice {title}: " + "; ".join(
                f"{subgroup_name(g)} {100 * res['dice_mean_before_' + g]:.1f}%"
                f" -> {100 * res['dice_mean_after_' + g]:.1f}%" for g in keys))
    by_direction = "".join(f", {subgroup_name(g)} {res[f'folding_percent_{g}']:.3f}%" for g in groups
                           if "_to_" in g and f"folding_percent_{g}" in res)
    rate = f"{res['pairs_per_second']:.0f}" if res.get("pairs_per_second") else "-"
    lines.append(f"folding {res['folding_percent']:.3f}% of pixels{by_direction} ({res['pairs_with_folding']} pairs "
                 f"with any); inference {1e3 * res['seconds_per_pair']:.2f} ms/pair ({rate} pairs/s)")
    if res.get("skipped_patients"):
        lines.append(f"skipped (unreadable) patients: {', '.join(sorted(res['skipped_patients']))}")
    return "\n".join(lines)


def aggregate(results: list[dict]) -> dict:
    """Mean and std over folds of every numeric entry that all folds report (older results may lack newer keys)."""
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("fold", "num_folds", "seed")
            and all(k in r for r in results)]
    out = {"folds": [r.get("fold") for r in results]}
    for k in keys:
        vals = np.array([r[k] for r in results], float)
        out[k] = {"mean": float(vals.mean()), "std": float(vals.std())}
    return out


TABLE_COLUMNS = (("LV", "dice_LV_after"), ("RV", "dice_RV_after"), ("MYO", "dice_MYO_after"),
                  ("mean", "dice_mean_after"), ("before", "dice_mean_before"),
                  ("ED->ES", "dice_mean_after_ed_to_es"), ("ES->ED", "dice_mean_after_es_to_ed"),
                  ("base", "dice_mean_after_base"), ("mid", "dice_mean_after_mid"), ("apex", "dice_mean_after_apex"))


def cv_table(results: list[dict], test_patients: list | None = None, baselines: dict | None = None) -> str:
    """Markdown table of a CV: one row per fold (Dice % per structure, mean, subgroups, folding), mean +- std.

    results: the folds' results.json dicts; test_patients: per fold, a list of patient ids (or None);
    baselines: `{method: aggregate(...)}` rows appended as mean +- std (e.g. classic, refine). Results with
    per-pathology means (`dice_mean_after_group_*`) get a second table, one column per group.
    """
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    head = "| fold (test patients) | pairs | " + " | ".join(c for c, _ in TABLE_COLUMNS) + " | folding % (pairs) |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 3)]
    for i, r in enumerate(results):
        ids = test_patients[i] if test_patients else None
        name = str(r.get("fold", i)) + (" (" + " ".join(p.removeprefix("patient") for p in ids) + ")" if ids else "")
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(pct(r.get(k)) for _, k in TABLE_COLUMNS)
                     + f" | {r['folding_percent']:.3f} ({r.get('pairs_with_folding', '-')}) |")

    def agg_row(name, agg):
        cells = [f"{100 * agg[k]['mean']:.1f} +- {100 * agg[k]['std']:.1f}" if k in agg else "-"
                 for _, k in TABLE_COLUMNS]
        fold = agg["folding_percent"]
        return f"| {name} | | " + " | ".join(cells) + f" | {fold['mean']:.3f} +- {fold['std']:.3f} |"

    network = aggregate(results)
    lines.append(agg_row("**network, mean +- std**", network))
    for method, agg in (baselines or {}).items():
        lines.append(agg_row(f"{method}, mean +- std", agg))
    groups = sorted({k.removeprefix("dice_mean_after_") for r in results for k in r
                     if k.startswith("dice_mean_after_group_")})
    if groups:  # second table: mean Dice after registration per pathology group (before in brackets)
        lines += ["", "Mean Dice % per pathology group (before registration in brackets); std over folds:", "",
                  "| fold | " + " | ".join(subgroup_name(g) for g in groups) + " |", "|" + "---|" * (len(groups) + 1)]
        for i, r in enumerate(results):
            lines.append(f"| {r.get('fold', i)} | " + " | ".join(
                f"{pct(r.get('dice_mean_after_' + g))} ({pct(r.get('dice_mean_before_' + g))})" for g in groups) + " |")
        for name, agg in [("**network, mean +- std**", network)] + [
                (f"{m}, mean +- std", a) for m, a in (baselines or {}).items()]:
            lines.append(f"| {name} | " + " | ".join(
                f"{100 * agg[k]['mean']:.1f} +- {100 * agg[k]['std']:.1f}" if (k := "dice_mean_after_" + g) in agg
                else "-" for g in groups) + " |")
    return "\n".join(lines) + "\n"



def comparison_table(results: dict, seconds: bool = True) -> str:
    """Markdown: methods (`{name: results dict}`) side by side on every Dice key they all have (mean, structures,
    directions, slice regions, pathology groups), folding % and (`seconds`) seconds a pair; the first two columns'
    difference last (first minus second). Leave `seconds` off where the times were not measured side by side."""
    names = list(results)
    keys = ["dice_mean_after", "dice_LV_after", "dice_RV_after", "dice_MYO_after"]
    subgroups = [k for k in results[names[0]] if k.startswith("dice_mean_after_")]
    order = ([k for k in subgroups if "_to_" in k] + [f"dice_mean_after_{r}" for r in ("base", "mid", "apex")]
             + sorted(k for k in subgroups if "_group_" in k))
    keys += [k for k in order if all(k in r for r in results.values())]
    diff = len(names) >= 2
    lines = ["| Dice % | " + " | ".join(names) + (f" | {names[0]} - {names[1]} |" if diff else " |"),
             "|---|" + "---|" * (len(names) + diff)]
    for k in keys:
        sub = k.removeprefix("dice_mean_after_")
        label = ("mean" if k == "dice_mean_after" else f"group {subgroup_name(sub)}" if sub.startswith("group_")
                 else subgroup_name(sub) if k.startswith("dice_mean_after_") else f"structure {k.split('_')[1]}")
        vals = [100 * results[n][k] for n in names]
        lines.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in vals)
                     + (f" | {vals[0] - vals[1]:+.1f} |" if diff else " |"))
    lines.append("| folding % | " + " | ".join(f"{results[n]['folding_percent']:.4f}" for n in names)
                 + (" | |" if diff else " |"))
    if seconds:
        lines.append("| s / pair | " + " | ".join(f"{results[n]['seconds_per_pair']:.4f}" for n in names)
                     + (f" | {results[names[0]]['seconds_per_pair'] / results[names[1]]['seconds_per_pair']:.2f}x |"
                        if diff else " |"))
    return "\n".join(lines) + "\n"


def fold_choice_report(out: dict, method: str, title: str, reference: str, label: str) -> str:
    """Markdown of a `jaxreg.fold_choice` result `out`: the choice per fold, its pooled result (`out[method]`)
    beside `out[reference]` (headed `label`), every candidate's pooled numbers."""
    res = out[method]
    lines = [f"{title}: folds {','.join(map(str, out['folds']))} of {res['num_folds']} ({res['pairs']} pairs, "
             f"{res['patients']} patients), {res['candidates']} candidates; admissible: folding < "
             f"{res['max_folding_percent']} % on the other folds"
             + (f"; the fastest within {100 * res['tolerance']:g} Dice points of the best there"
                if res.get("tolerance") else "") + "."
             + (f" Finished folds {','.join(map(str, res['skipped_folds']))} are not in it: their model and cached "
                "candidate tables are not here." if res.get("skipped_folds") else ""), "",
             "Chosen per fold (on the other finished folds), and the fold's mean Dice with it: " + ", ".join(
                 f"fold {k} {v} ({100 * res['dice_mean_after_per_fold'][k]:.1f} %)"
                 for k, v in res["chosen_per_fold"].items()) + ".",
             f"Chosen on all finished folds (the setting to use): {res['chosen_on_all']}.", "",
             "Pooled over the finished folds' pairs (not a mean over folds):", "",
             comparison_table({"chosen by CV": res, label: out[reference]}, seconds=False),
             "Every candidate, pooled (for reading only: choosing on these would be choosing on the reported pairs):",
             "", "| candidate | Dice % | folding % | ED->ES | ES->ED | apex | HCM | s / pair |", "|---" * 8 + "|"]
    for name, r in out["candidates"].items():
        cells = [f"{100 * r[k]:.1f}" if k in r else "-" for k in ("dice_mean_after_ed_to_es", "dice_mean_after_es_to_ed",
                                                                   "dice_mean_after_apex", "dice_mean_after_group_hcm")]
        lines.append(f"| {name} | {100 * r['dice_mean_after']:.2f} | {r['folding_percent']:.4f} | "
                     + " | ".join(cells) + f" | {r['seconds_per_pair']:.4f} |")
    return "\n".join(lines) + "\n"
