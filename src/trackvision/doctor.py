"""The experiment doctor: checks that flag the faults behind the thesis's untrustworthy numbers.

Each check looks at what a stage produced and returns findings: a level (info | warn | fail), a
one-line explanation in plain words and the evidence (numbers, example files). The thesis's
99.8% came from validating on the training set (leakage), its 47.11% was below chance on
balanced data (broken labels or preprocessing), a 100% came from a tiny set (too good to trust),
and MobileViT was fed inputs normalised for another distribution (preprocessing mismatch).
Checks are plain functions of arrays and numbers, so tests can build each fault on purpose.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from trackvision import atomic
from trackvision.evaluation.confidence import wilson_interval

if TYPE_CHECKING:
    from trackvision.data.similarity import Rule

log = logging.getLogger(__name__)

LEVELS = ("info", "warn", "fail")


@dataclass(frozen=True)
class Finding:
    code: str  # stable id, e.g. "leakage.exact"; one MLflow tag each
    level: str  # info | warn | fail
    message: str  # one line, plain words
    evidence: dict[str, Any] = field(default_factory=dict)


def status(findings: Iterable[Finding]) -> str:
    """ok, or the worst level found (warn | fail); info findings do not count."""
    levels = {f.level for f in findings}
    return "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"


# -- balance: the splits ----------------------------------------------------------------------


def check_exact_leakage(hashes: Mapping[str, Sequence[str]], paths: Mapping[str, Sequence[str]]):
    """The same file content (sha256) in two splits: the model is tested on what it saw."""
    where: dict[str, set[str]] = {}
    example: dict[str, str] = {}
    for split, split_hashes in hashes.items():
        for h, path in zip(split_hashes, paths[split], strict=True):
            where.setdefault(h, set()).add(split)
            example.setdefault(h, path)
    shared = {h: sorted(s) for h, s in where.items() if len(s) > 1}
    if not shared:
        return []
    examples = [{"file": example[h], "splits": s} for h, s in list(shared.items())[:5]]
    return [
        Finding(
            "leakage.exact",
            "fail",
            f"{len(shared)} image(s) are in more than one split: test or validation scores "
            "measure memory, not generalisation",
            {"count": len(shared), "examples": examples},
        )
    ]


def check_near_duplicates(
    images: Mapping[str, np.ndarray],
    paths: Mapping[str, Sequence[str]],
    rule: Rule,
    labels: Mapping[str, Sequence[str]] | None = None,
    groups: Mapping[str, np.ndarray] | None = None,
    limit: int = 5,
):
    """Near-identical images across splits: resized, re-encoded, cropped or brightness-shifted
    copies that exact hashing misses. The copy rule (``data/similarity.py``) joins the images of
    every split into near-copy groups; each two images of one group in two splits are a pair.
    The search runs in blocks, so memory stays linear in the number of images. With ``labels``,
    the evidence counts the pairs per class (pairs of two images of that class). ``groups``
    (per split, each image's group) are the groups balance made with this rule over the same
    images: the same answer without searching again."""
    from trackvision.data.similarity import Descriptors, describe, near_copy_groups

    names = [n for n in images if len(images[n])]
    if len(names) < 2:
        return []
    split = np.concatenate([np.full(len(images[n]), k) for k, n in enumerate(names)])
    offset = np.concatenate([np.arange(len(images[n])) for n in names])
    if groups is not None:
        group = np.concatenate([np.asarray(groups[n]) for n in names])
    else:
        described = [describe(np.asarray(images[n])) for n in names]
        group = near_copy_groups(Descriptors.concat(described), rule)
    count = _cross_pairs(group, split, len(names))
    if not count.sum():
        return []
    by_class: dict[str, int] = {}
    if labels is not None:
        label = np.concatenate([np.asarray(labels[n], dtype=object) for n in names])
        for name in sorted(set(label.tolist())):
            mine = label == name
            n = int(_cross_pairs(group[mine], split[mine], len(names)).sum())
            if n:
                by_class[name] = n
    examples = []
    for g in np.flatnonzero(count)[:limit]:
        members = np.flatnonzero(group == g)
        first = {names[split[m]]: paths[names[split[m]]][offset[m]] for m in members[::-1]}
        examples.append({**dict(list(first.items())[:2]), "group_size": len(members)})
    total = int(count.sum())
    ranked = sorted(by_class.items(), key=lambda kv: -kv[1])
    most = ", ".join(f"{name} ({n})" for name, n in ranked[:limit])
    return [
        Finding(
            "leakage.near_duplicate",
            "warn",
            f"{total} pair(s) of near-identical images across splits (resized, re-encoded, "
            "cropped or brightness-shifted copies): they inflate the scores"
            + (f"; most in class(es) {most}" if most else ""),
            {
                "pairs": total,
                "correlation": rule.correlation,
                "pairs_by_class": dict(ranked),
                "examples": examples,
            },
        )
    ]


def _cross_pairs(groups: np.ndarray, split: np.ndarray, splits: int) -> np.ndarray:
    """Per group, how many pairs of its images sit in two different splits."""
    if not len(groups):
        return np.zeros(0, dtype=np.int64)
    per = np.zeros((int(groups.max()) + 1, splits), dtype=np.int64)
    np.add.at(per, (groups, split), 1)
    return (per.sum(axis=1) ** 2 - (per**2).sum(axis=1)) // 2


def check_split_groups(grouping: Mapping[str, Any]):
    """Near-copy groups balance could not keep in one split, and groups that mix classes."""
    findings = []
    if grouping.get("broken"):
        classes = grouping["broken_classes"]
        shown = ", ".join(classes[:10]) + (
            f" and {len(classes) - 10} more" if len(classes) > 10 else ""
        )
        findings.append(
            Finding(
                "leakage.groups_split",
                "warn",
                f"{grouping['broken']} group(s) of near-copies ({grouping['broken_images']} "
                f"images) were too large to keep in one split, so class(es) {shown} could not "
                "be kept apart; the near-copy check counts the pairs that still cross",
                {
                    k: grouping[k]
                    for k in ("broken", "broken_images", "broken_classes", "broken_examples")
                },
            )
        )
    if grouping.get("mixed_label_groups"):
        # info, not warn: a near-copy under another class is often the very edit that makes the
        # class (a caption added to a photo), which the copy rule cannot tell from a wrong label.
        first = grouping["mixed_label_examples"][0]
        findings.append(
            Finding(
                "label_conflict.near_copy",
                "info",
                f"{grouping['mixed_label_groups']} group(s) of near-copies hold more than one "
                f"class (first: {first['example']}, classes {first['classes']}): kept together "
                "in one split with their labels as given; check them if a class should not "
                "contain edits of another's pictures",
                {
                    "count": grouping["mixed_label_groups"],
                    "examples": grouping["mixed_label_examples"],
                },
            )
        )
    return findings


def check_label_conflicts(conflicts: Sequence[Mapping[str, Any]], limit: int = 5):
    """The same file under two classes: no label can be right for both, so it was left out."""
    if not conflicts:
        return []
    first = conflicts[0]
    where = " and ".join(
        f"{p} ({label})" for p, label in zip(first["paths"], first["labels"], strict=True)
    )
    return [
        Finding(
            "label_conflict",
            "warn",
            f"{len(conflicts)} picture(s) sit under two classes and were left out of every split; "
            f"first: {where}. Keep each picture under one class folder",
            {"count": len(conflicts), "examples": list(conflicts[:limit])},
        )
    ]


def check_imbalance(counts: Mapping[str, int], strategy: str, tolerance: float = 0.05):
    """Training classes further apart than the balance strategy allows."""
    if not counts or min(counts.values()) == 0:
        empty = [c for c, n in counts.items() if n == 0]
        return [Finding("imbalance", "fail", f"class(es) {empty} have no training image", {})]
    ratio = max(counts.values()) / min(counts.values())
    if strategy == "none":
        level = "warn" if ratio > 1.5 else "info"
        if level == "info":
            return []
        return [
            Finding(
                "imbalance",
                level,
                f"training classes differ by {ratio:.2f}x and balance.strategy is none: "
                "accuracy will favour the larger class",
                {"counts": dict(counts), "ratio": round(ratio, 3)},
            )
        ]
    if ratio > 1 + tolerance:
        return [
            Finding(
                "imbalance",
                "fail",
                f"training classes differ by {ratio:.2f}x after {strategy}: the balance stage "
                "did not balance",
                {"counts": dict(counts), "ratio": round(ratio, 3)},
            )
        ]
    return []


# -- train: the fit and the inputs -----------------------------------------------------------


def check_fit(history: Sequence[Mapping[str, float]], n_val: int, n_train: int):
    """A perfect validation score on a set too small to support it; memorisation."""
    findings = []
    best = max(history, key=lambda row: row["val_accuracy"])
    correct = round(best["val_accuracy"] * n_val)
    if n_val and correct == n_val:
        low, _ = wilson_interval(correct, n_val)
        findings.append(
            Finding(
                "too_good.val",
                "warn",
                f"validation accuracy 1.0 on {n_val} images: the 95% interval still reaches "
                f"down to {low:.3f}; check the split for leakage before believing it",
                {"n": n_val, "ci95": [round(low, 4), 1.0]},
            )
        )
    last = history[-1]
    gap = last["train_accuracy"] - last["val_accuracy"]
    if last["train_accuracy"] >= 0.99 and gap >= 0.15:
        findings.append(
            Finding(
                "memorisation",
                "warn",
                f"train accuracy {last['train_accuracy']:.3f} vs validation "
                f"{last['val_accuracy']:.3f}: the model memorises its {n_train} training images",
                {"train_accuracy": last["train_accuracy"], "val_accuracy": last["val_accuracy"]},
            )
        )
    return findings


def check_preprocessing(
    used: Mapping[str, Any], expected: Mapping[str, Any] | None, tolerance: float = 1e-3
):
    """Mean/std/input size used differ from what the pretrained weights were trained with."""
    if not expected:
        return []
    diffs = {}
    for key in ("mean", "std"):
        if key in expected and not np.allclose(used[key], expected[key], atol=tolerance):
            diffs[key] = {"used": list(used[key]), "expected": list(expected[key])}
    if diffs:
        return [
            Finding(
                "preprocessing.mismatch",
                "fail",
                "inputs are normalised with statistics the pretrained weights were not trained "
                "with: the features they learned do not see what they expect",
                diffs,
            )
        ]
    return []


def check_batch_range(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]):
    """A preprocessed batch whose values cannot come from [0, 1] pixels under mean/std:
    pixels left in 0..255, or normalised twice."""
    lo = min((0 - m) / s for m, s in zip(mean, std, strict=True))
    hi = max((1 - m) / s for m, s in zip(mean, std, strict=True))
    seen_lo, seen_hi = float(batch.min()), float(batch.max())
    # Bicubic resizing overshoots a little (-0.06..1.06 measured on MobileViT's inputs); the
    # faults this is for (pixels in 0..255, normalising twice) are off by far more.
    slack = 0.25 * (hi - lo)
    if seen_lo < lo - slack or seen_hi > hi + slack:
        return [
            Finding(
                "preprocessing.range",
                "fail",
                f"a training batch spans [{seen_lo:.2f}, {seen_hi:.2f}], but pixels in [0, 1] "
                f"normalised with this mean/std span [{lo:.2f}, {hi:.2f}]",
                {"seen": [seen_lo, seen_hi], "expected": [lo, hi]},
            )
        ]
    return []


# -- evaluate: the scores --------------------------------------------------------------------


def check_below_chance(y_true: np.ndarray, y_pred: np.ndarray):
    """Accuracy significantly below always answering the majority class (binomial, p < 0.01)."""
    n = len(y_true)
    if n == 0:
        return []
    majority = np.bincount(y_true).max() / n
    correct = int((y_true == y_pred).sum())
    p = stats.binom.cdf(correct, n, majority)  # one-sided: P(this few correct | majority rate)
    if p < 0.01:
        return [
            Finding(
                "below_chance",
                "fail",
                f"test accuracy {correct / n:.4f} is below the majority-class rate {majority:.4f} "
                f"(binomial p = {p:.1e}): labels, class order or preprocessing are probably wrong",
                {"accuracy": correct / n, "majority_rate": majority, "p_value": p, "n": n},
            )
        ]
    return []


def check_collapse(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str], share=0.95):
    """One class takes (almost) all predictions while the data is not like that."""
    n = len(y_pred)
    if n == 0:
        return []
    predicted = np.bincount(y_pred, minlength=len(classes)) / n
    actual = np.bincount(y_true, minlength=len(classes)) / n
    top = int(predicted.argmax())
    if predicted[top] >= share and actual[top] < share - 0.1:
        return [
            Finding(
                "collapsed",
                "fail",
                f"{predicted[top]:.0%} of test predictions are '{classes[top]}' (true share "
                f"{actual[top]:.0%}): the model collapsed onto one class",
                {
                    "predicted_share": dict(zip(classes, predicted.round(4).tolist(), strict=True)),
                    "true_share": dict(zip(classes, actual.round(4).tolist(), strict=True)),
                },
            )
        ]
    return []


def check_too_good(correct: int, n: int, small: int = 1000):
    """A perfect test score: on a small set it says little; on any set it deserves a look."""
    if n == 0 or correct < n:
        return []
    low, _ = wilson_interval(correct, n)
    return [
        Finding(
            "too_good.test",
            "warn" if n < small else "info",
            f"test accuracy 1.0 on {n} images: the 95% interval is [{low:.3f}, 1.0]; check for "
            "leakage before believing it",
            {"n": n, "ci95": [round(low, 4), 1.0]},
        )
    ]


# -- reporting --------------------------------------------------------------------------------


def to_json(findings: Sequence[Finding]) -> dict[str, Any]:
    return {"status": status(findings), "findings": [asdict(f) for f in findings]}


def from_json(data: Mapping[str, Any]) -> list[Finding]:
    return [Finding(**f) for f in data.get("findings", [])]


def write(findings: Sequence[Finding], path: Path) -> None:
    atomic.write_json(path, to_json(findings))


def read(path: Path) -> list[Finding]:
    if not path.is_file():
        return []
    return from_json(json.loads(path.read_text(encoding="utf-8")))


def mlflow_tags(findings: Sequence[Finding]) -> dict[str, str]:
    """doctor.status plus one tag per finding, for the run list in the MLflow UI."""
    tags = {"doctor.status": status(findings)}
    for f in findings:
        tags[f"doctor.{f.code}"] = f"{f.level}: {f.message}"[:5000]
    return tags


def enforce(findings: Sequence[Finding], strict: bool, stage: str, where: Path) -> None:
    """With ``doctor.strict: true``, a ``fail`` finding fails the stage (outputs are written)."""
    failed = [f for f in findings if f.level == "fail"]
    if strict and failed:
        from trackvision.errors import DataError

        raise DataError(
            f"doctor ({stage}): {len(failed)} failing finding(s), first: {failed[0].message} "
            f"(details in {where}; doctor.strict: true makes this fatal)"
        )


def report(stage: str, findings: Sequence[Finding]) -> None:
    """The short summary at the end of a stage."""
    if not findings:
        log.info("doctor (%s): ok", stage)
        return
    for f in findings:
        log.log(
            {"info": logging.INFO, "warn": logging.WARNING, "fail": logging.ERROR}[f.level],
            "doctor (%s) %s [%s]: %s",
            stage,
            f.level.upper(),
            f.code,
            f.message,
        )
