#!/usr/bin/env python3
"""Picks the committed seed set (fuzz/seeds/<target>/) from a working corpus: small, varied,
and holding every named finding. See README.md, "Seeds and the working corpus".

    python3 fuzz/pick_seeds.py fuzz/corpus NEW_SEEDS_DIR [PER_TARGET] [REAL_INPUTS_DIR]

Per target: every `finding-*` of the corpus; the real inputs in REAL_INPUTS_DIR/<target>/ (what
seed.py writes, pointed at an empty directory); then, when byte 0 picks a variant (see
src/fuzz.rs), the input of each variant that adds the most unseen byte 4-grams; then, greedily,
the inputs adding the most unseen 4-grams per kilobyte, until PER_TARGET (36) inputs besides
the findings. Inputs over 4 KB are left to the working corpus."""
import os, sys

STATUSES = [200, 200, 200, 204, 404, 429, 502, 503]


def variant(target, data):
    if not data:
        return "empty"
    pick = data[0]
    if target == "response":
        return (pick & 1, STATUSES[(pick >> 1) % len(STATUSES)])
    if target == "report":
        return pick & 1
    if target == "input_csv":
        return pick % 4
    return None


def grams(data, n=4):
    return {data[i : i + n] for i in range(max(0, len(data) - n + 1))}


def main():
    src, dst = sys.argv[1], sys.argv[2]
    per_target = int(sys.argv[3]) if len(sys.argv) > 3 else 36
    real = sys.argv[4] if len(sys.argv) > 4 else None
    for target in sorted(os.listdir(src)):
        files = {f: open(os.path.join(src, target, f), "rb").read() for f in os.listdir(os.path.join(src, target))}
        keep = [f for f in files if f.startswith("finding-")]
        findings = len(keep)
        real_dir = os.path.join(real, target) if real else ""
        for f in sorted(os.listdir(real_dir)) if os.path.isdir(real_dir) else []:
            files[f] = open(os.path.join(real_dir, f), "rb").read()
            keep.append(f)
        seen = set()
        for f in keep:
            seen |= grams(files[f])
        cand = sorted(f for f in files if f not in keep and not f.startswith("finding-") and len(files[f]) <= 4096)
        g = {f: grams(files[f]) for f in cand}

        def score(f):
            return len(g[f] - seen) / (1 + len(files[f]) / 1024)

        variants = {}
        for f in cand:
            variants.setdefault(variant(target, files[f]), []).append(f)
        if len(variants) > 1:
            for v in sorted(variants, key=str):
                best = max(variants[v], key=lambda f: (score(f), f))
                keep.append(best)
                seen |= g[best]
        chosen = set(keep)
        while len(chosen) - findings < per_target:
            rest = [f for f in cand if f not in chosen]
            if not rest:
                break
            best = max(rest, key=lambda f: (score(f), f))
            if score(best) == 0:
                break
            chosen.add(best)
            seen |= g[best]
        os.makedirs(os.path.join(dst, target), exist_ok=True)
        for f in sorted(chosen):
            with open(os.path.join(dst, target, f), "wb") as out:
                out.write(files[f])
        print(target, len(chosen), "inputs,", sum(len(files[f]) for f in chosen), "bytes")


if __name__ == "__main__":
    main()
