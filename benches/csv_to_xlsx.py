#!/usr/bin/env python3
"""Copy a CSV into an xlsx, one sheet, as Excel saves it (text in the shared-string table).

Usage: python3 benches/csv_to_xlsx.py IN.csv OUT.xlsx   (pip install XlsxWriter)

Used by benches/ingest_bench.sh for the xlsx rows (the 1,000,000-row workbook is made there,
never committed). Every cell is written as text, as a fleet list typed or pasted into Excel is.
"""

import csv
import sys

import xlsxwriter


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip())
    src, out = sys.argv[1], sys.argv[2]
    book = xlsxwriter.Workbook(out, {"strings_to_numbers": False, "strings_to_urls": False})
    sheet = book.add_worksheet("Fleet")
    with open(src, newline="", encoding="utf-8") as f:
        for r, row in enumerate(csv.reader(f)):
            for c, value in enumerate(row):
                sheet.write_string(r, c, value)
    book.close()


if __name__ == "__main__":
    main()
