"""Benchmark: precision and recall of the near-copy rule on a labelled gallery of bursts.

The gallery (``tests/data/galleries.py``) holds originals of four hard kinds (disjoint tiles of
real photos, soft gradients, blurred noise, flat walls with a few strokes, the low-texture ones
from narrow palettes), each with a burst of 1 to 4 edited copies (resized, re-encoded, cropped
off-centre by 2-8% a side, brightness-shifted), among distinct pictures of the same kinds. The
rule runs over the whole gallery as balance runs it, and every pair is labelled, so precision
and recall are exact counts; "groups" counts the bursts that the copy pairs leave in pieces and
the groups that glue distinct originals together. Usage:
    python benchmarks/near_duplicates.py [--originals 300] [--size 64] [--seed 0]
        [--out reports/bench_near_duplicates.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the labelled gallery lives in tests/

from tests.data.galleries import bursts  # noqa: E402

from trackvision.atomic import write_json  # noqa: E402
from trackvision.data.similarity import copy_pair_blocks, describe, near_copy_groups  # noqa: E402

log = logging.getLogger("bench")


def score(originals: int, size: int, seed: int = 0) -> dict:
    gallery = bursts(originals, None, 2 * originals, seed)
    described = describe(gallery.decoded(size))
    found = set()
    for i, j, _ in copy_pair_blocks(described):
        found |= set(zip(i.tolist(), j.tolist(), strict=True))
    true = gallery.copy_pairs()
    kind, edit, origin = gallery.kind, gallery.edit, np.asarray(gallery.group)
    missed = true - found
    edits = Counter("+".join(sorted((edit[i], edit[j]))) for i, j in true)
    missed_edits = Counter("+".join(sorted((edit[i], edit[j]))) for i, j in missed)
    groups = near_copy_groups(described)
    glued = sum(len(set(origin[groups == g])) > 1 for g in np.unique(groups))
    pieces = sum(len(set(groups[origin == o])) > 1 for o in range(originals))
    tp = len(found & true)
    return {
        "pictures": len(gallery.pictures),
        "copy_pairs": len(true),
        "found": len(found),
        "true_positives": tp,
        "false_positives": len(found - true),
        "precision": round(tp / len(found), 4) if found else 1.0,
        "recall": round(tp / len(true), 4),
        "recall_by_edits": {e: round(1 - missed_edits[e] / n, 4) for e, n in sorted(edits.items())},
        "missed_by_kind": dict(Counter(kind[i] for i, _ in missed)),
        "false_positives_by_kinds": dict(
            Counter("~".join(sorted((kind[i], kind[j]))) for i, j in found - true)
        ),
        "bursts_in_pieces": pieces,
        "groups_gluing_distinct_originals": glued,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=300)
    parser.add_argument("--size", type=int, default=64, help="decode size (data.image_size)")
    parser.add_argument("--seed", type=int, default=0, help="another seed, another gallery")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_near_duplicates.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {
        "size": args.size,
        "originals": args.originals,
        "seed": args.seed,
        **score(args.originals, args.size, args.seed),
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
