"""Opens every exported Parquet table with polars and checks the dtypes BI users get.
Usage: python3 check_dtypes.py OUTDIR   (needs: pip install polars)"""
import sys
import polars as pl

out = sys.argv[1]
ts = pl.Datetime("ms", "UTC")
want = {
    "requests": {"vin": pl.String, "status": pl.String, "code": pl.Int32, "submit_attempts": pl.Int32,
                 "first_seen_at": ts, "completed_at": ts, "input_line": pl.Int32},
    "reports": {"first_visit_date": pl.Date, "total_mileage_km": pl.Int64, "avg_yearly_mileage_km": pl.Float64,
                "avg_yearly_services": pl.Float64, "record_count": pl.Int32, "accident_status": pl.Int8,
                "report_updated_date": pl.Date, "fetched_at": ts},
    "records": {"seq": pl.Int32, "visit_date": pl.Date, "maintained_at": ts, "type_code": pl.Int8,
                "type_name": pl.String, "mileage_km": pl.Int64, "total_amount": pl.Decimal(18, 2)},
    "overview": {"part": pl.String, "has_exception": pl.Boolean, "exception_count": pl.Int32},
    "exceptions": {"seq": pl.Int32, "raw": pl.String, "component": pl.String, "finding": pl.String},
}
for table, cols in want.items():
    df = pl.read_parquet(f"{out}/{table}.parquet")
    for col, dtype in cols.items():
        assert df.schema[col] == dtype, f"{table}.{col}: {df.schema[col]} != {dtype}"
    print(table, df.height)
rec = pl.read_parquet(f"{out}/records.parquet")
assert str(rec["total_amount"][1]) == "100.51", rec["total_amount"][1]
assert str(rec["maintained_at"][0]) == "2015-12-13 09:46:40+00:00", rec["maintained_at"][0]
print("ok")
