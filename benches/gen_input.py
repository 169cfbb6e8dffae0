#!/usr/bin/env python3
"""Write an N-row vmr input CSV of distinct, valid VINs with correct ISO 3779 check digits.

Usage: python3 benches/gen_input.py N OUT.csv

Used by the ingest benchmark (e.g. `python3 benches/gen_input.py 1000000 /tmp/1m.csv`).
The output is deterministic: the same N always gives the same bytes.
"""

import random
import sys

WMIS = ["LSV", "LFV", "LHG", "LVH", "LBV", "LE4", "LGB", "LVS", "LFM", "LVG",
        "LSG", "LDC", "LBE", "LJD", "LGW", "LB3", "LC0", "LS5", "LZW", "LVV"]
ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
VALUES = {c: int(c) for c in "0123456789"}
VALUES.update(zip("ABCDEFGH", range(1, 9)))
VALUES.update(zip("JKLMN", range(1, 6)))
VALUES.update({"P": 7, "R": 9})
VALUES.update(zip("STUVWXYZ", range(2, 10)))
WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
YEARS = "ABCDEFGHJKLMNPRSTVWXY123456789"


def check_digit(vin):
    total = sum(VALUES[c] * w for c, w in zip(vin, WEIGHTS))
    r = total % 11
    return "X" if r == 10 else str(r)


def with_check_digit(vin):
    return vin[:8] + check_digit(vin) + vin[9:]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip())
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(3779)
    per_wmi = -(-n // len(WMIS))
    if per_wmi > 10**6:
        sys.exit("at most 20,000,000 rows: the serial number has six digits")
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("vin,licenseImgUrl\n")
        for i in range(n):
            wmi = WMIS[i % len(WMIS)]
            vds = "".join(rng.choice(ALPHABET) for _ in range(5))
            vis = rng.choice(YEARS) + rng.choice(ALPHABET) + "%06d" % (i // len(WMIS))
            vin = with_check_digit(wmi + vds + "0" + vis)
            f.write("%s,https://img.example-fleet.cn/license/2024/06/%08x-%04x.jpg\n"
                    % (vin, rng.getrandbits(32), i & 0xFFFF))


if __name__ == "__main__":
    main()
