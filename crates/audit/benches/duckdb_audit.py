"""The *did* audit as a privacy engineer would write it without consentry: the whole question
in SQL, in DuckDB, over the ledger's Parquet export and the store's fact history.

Every disclosure (one Parquet row per record, subject and field) is joined AS OF its instant
with the four histories the decision depends on: the app's status, the app's installation in
the group (and since when), the subject's membership in the group (and role), and the
subject's profile consent to the app. The policy is then written out in SQL, rule by rule,
from policies/groups-2018.cedar and policies/groups-2018-grandfathered.cedar; a disclosure
violates when no rule permits it. Cedar's semantics carried over: the last change at or before
the instant is in force (several changes at one instant: the last one recorded); an app with
no status yet counts as not active; a subject that is a group has no membership or consent.

usage: python3 duckdb_audit.py EXPORT_DIR HISTORY_DIR POLICY THREADS OUT_CSV
  POLICY: groups-2018 or groups-2018-grandfathered
  HISTORY_DIR holds memberships.csv, installations.csv, app_statuses.csv, consents.csv.
prints `seconds S` (connect, loads, joins, answer in memory), `rows N`, `peak_rss_mib M`,
`threads T`, `duckdb VERSION`, then writes the answer to OUT_CSV (not timed):
app,field,member,violations.
"""
import resource
import sys
import time

import duckdb

GRANDFATHERED_BEFORE = 1522800000  # installed_since < this, in seconds (policies/*.cedar)

# The rules of each policy, as SQL over the facts at the instant: `active`, `installed`,
# `since_s`, `is_member`, `consented` and the disclosed `field`.
GROUP_AND_POSTS = "field IN ('group.name', 'group.member_count', 'post.content', 'post.created_time')"
PERMITS = {
    "groups-2018": f"""
        -- installed-app-reads-group-and-posts
        (active AND installed AND {GROUP_AND_POSTS})
        -- member-profile-needs-consent
        OR (active AND installed AND field IN ('member.name', 'member.picture') AND is_member AND consented)
        -- post-author-needs-consent
        OR (active AND installed AND field = 'post.author' AND consented)
    """,
}
PERMITS["groups-2018-grandfathered"] = PERMITS["groups-2018"] + f"""
        -- grandfathered-member-profiles
        OR (active AND installed AND field IN ('member.name', 'member.picture')
            AND since_s < {GRANDFATHERED_BEFORE} AND is_member)
        -- grandfathered-post-authors
        OR (active AND installed AND field = 'post.author' AND since_s < {GRANDFATHERED_BEFORE})
"""


def main():
    export_dir, history_dir, policy, threads, out_csv = sys.argv[1:6]
    permits = PERMITS[policy]
    started = time.time()
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")

    def load(table, columns, key):
        # The last change recorded at each instant of each key is the one in force.
        spec = ", ".join(f"'{name}': '{kind}'" for name, kind in columns)
        con.execute(
            f"""CREATE TABLE {table} AS SELECT * EXCLUDE (seq)
            FROM read_csv('{history_dir}/{table}.csv', header = true, columns = {{{spec}}})
            QUALIFY row_number() OVER (PARTITION BY {key}, since ORDER BY seq DESC) = 1"""
        )

    load("memberships", [("seq", "BIGINT"), ("since", "BIGINT"), ("grp", "VARCHAR"), ("member", "VARCHAR"), ("role", "VARCHAR")], "grp, member")
    load("installations", [("seq", "BIGINT"), ("since", "BIGINT"), ("app", "VARCHAR"), ("grp", "VARCHAR"), ("installed_ms", "BIGINT")], "app, grp")
    load("app_statuses", [("seq", "BIGINT"), ("since", "BIGINT"), ("app", "VARCHAR"), ("status", "VARCHAR")], "app")
    load("consents", [("seq", "BIGINT"), ("since", "BIGINT"), ("member", "VARCHAR"), ("app", "VARCHAR"), ("granted", "BOOLEAN")], "member, app")
    con.execute(
        f"""
        CREATE TABLE answer AS
        WITH disclosed AS (
            SELECT epoch_ms(instant) AS t, app, split_part(installation, '@', 2) AS grp, subject, field
            FROM read_parquet('{export_dir}/*/*.parquet', hive_partitioning = false)
        ),
        facts AS (
            SELECT d.app, d.field, d.subject,
                   coalesce(s.status, 'banned') = 'active' AS active,
                   i.installed_ms IS NOT NULL AS installed,
                   coalesce(i.installed_ms // 1000, 0) AS since_s,
                   m.role IS NOT NULL AS is_member,
                   coalesce(c.granted, false) AS consented
            FROM disclosed d
            ASOF LEFT JOIN app_statuses s ON d.app = s.app AND d.t >= s.since
            ASOF LEFT JOIN installations i ON d.app = i.app AND d.grp = i.grp AND d.t >= i.since
            ASOF LEFT JOIN memberships m ON d.grp = m.grp AND d.subject = m.member AND d.t >= m.since
            ASOF LEFT JOIN consents c ON d.subject = c.member AND d.app = c.app AND d.t >= c.since
        )
        SELECT app, field, subject AS member, count(*) AS violations
        FROM facts
        WHERE NOT ({permits})
        GROUP BY ALL
        """
    )
    rows = con.execute("SELECT count(*) FROM answer").fetchone()[0]
    elapsed = time.time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    con.execute(f"COPY (SELECT * FROM answer ORDER BY ALL) TO '{out_csv}' (HEADER, DELIMITER ',')")
    print(f"seconds {elapsed:.3f}")
    print(f"rows {rows}")
    print(f"peak_rss_mib {peak:.0f}")
    print(f"threads {con.execute('SELECT current_setting(' + repr('threads') + ')').fetchone()[0]}")
    print(f"duckdb {duckdb.__version__}")


main()
