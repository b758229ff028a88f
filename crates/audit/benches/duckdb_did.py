"""The *did* answer computed the way a privacy engineer would without consentry: DuckDB over
the ledger's Parquet export and the consent history, with an ASOF JOIN.

In the benchmark's world every app is active and installed and every disclosed member is a
member of the group throughout, so under groups-2018 a member.name or member.picture
disclosure violates exactly when the member had not opted in to that app at that instant.

usage: python3 duckdb_did.py EXPORT_DIR CONSENTS_CSV
prints one line per (app, field, violations), then `seconds S` and `peak_rss_mib M`.
"""
import resource
import sys
import time

import duckdb

export_dir, consents_csv = sys.argv[1], sys.argv[2]
started = time.time()
con = duckdb.connect()
con.execute(
    "CREATE TABLE consents AS SELECT member, app, epoch_ms(at_ms) AS at, granted "
    f"FROM read_csv('{consents_csv}', header=true, columns={{'member':'VARCHAR','app':'VARCHAR','at_ms':'BIGINT','granted':'BOOLEAN'}})"
)
rows = con.execute(
    f"""
    SELECT d.app, d.field, count(*) AS violations
    FROM read_parquet('{export_dir}/*/*.parquet', hive_partitioning = true) d
    ASOF LEFT JOIN consents c
      ON d.subject = c.member AND d.app = c.app AND d.instant >= c.at
    WHERE d.field IN ('member.name', 'member.picture') AND NOT coalesce(c.granted, false)
    GROUP BY ALL ORDER BY ALL
    """
).fetchall()
elapsed = time.time() - started
for app, field, n in rows:
    print(f"{app} {field} {n}")
print(f"seconds {elapsed:.3f}")
print(f"peak_rss_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
