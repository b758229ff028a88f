-- A page's snapshot as ONE row, planned once per connection, whose cost grows with the page
-- and nothing else (V3's returned a row per member or post and was planned again on every
-- call). What it reads, and under which locks, is V3's:
-- - `SET plan_cache_mode = force_generic_plan`: PL/pgSQL otherwise plans each statement anew
--   with the call's values whenever the generic plan looks dearer, as it always did here;
--   planning cost more than reading.
-- - Members and posts come as arrays, element by element in the same order, instead of one
--   24-column row each.
-- - A members page's consents: the app's consents among the ids the page spans are read in
--   one index range scan, stopped one row past the page's limit; if the range holds more
--   than that (a small group whose members are spread over the platform's ids), each listed
--   member's consent is read by an index probe instead. A post's author is read by probes.
--   Either way at most a page's worth of rows, however many consents the app holds and
--   however many members the platform has, whatever the planner's statistics (scalar
--   subqueries are never turned into joins over whole tables, nor hashed).
-- - A listed member's profile (name, picture) is read, by a probe, only if the caller names its
--   kind (its role among `p_profiles_consenting` if it consents to the app, among
--   `p_profiles_not_consenting` if not) and it is among the first `p_profiles_at_most` of those
--   kinds by id: the members the caller expects to show, so that their profiles come in the
--   same round trip and no others are read.
-- Needs PostgreSQL 12 or later (`AS MATERIALIZED`, `plan_cache_mode`). The result's shape
-- changed: a node of an older build still running once a newer one migrated fails its Groups
-- requests (closed: 500) until it is replaced; its /readyz already says the schema is newer.
-- Never edit this file: add V5__….sql.
DROP FUNCTION consentry_read_page(TEXT, TEXT, TEXT, TEXT, TEXT, BIGINT, BOOLEAN, BIGINT[]);
CREATE FUNCTION consentry_read_page(
  p_token TEXT, p_app TEXT, p_group TEXT, p_list TEXT, p_after TEXT, p_limit BIGINT,
  p_count BOOLEAN, p_keys BIGINT[], p_profiles_consenting TEXT[], p_profiles_not_consenting TEXT[],
  p_profiles_at_most BIGINT
) RETURNS TABLE (
  busy BOOLEAN,
  token_app TEXT, token_issued_at BIGINT, token_expires_at BIGINT, token_revoked_at BIGINT,
  app_developer TEXT, app_name TEXT, app_category TEXT, app_status TEXT, app_client_id TEXT,
  installed_by TEXT, installed_at BIGINT,
  group_name TEXT, policy_version BIGINT, member_count BIGINT, released_at BIGINT,
  member_ids TEXT[], member_roles TEXT[], member_consents BOOLEAN[],
  profile_ids TEXT[], profile_names TEXT[], profile_pictures TEXT[],
  post_ids TEXT[], post_contents TEXT[], post_created_at BIGINT[], post_authors TEXT[],
  author_names TEXT[], author_pictures TEXT[], author_roles TEXT[], author_consents BOOLEAN[]
) LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
  k BIGINT;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'consentry reads pages under read committed, not %',
      current_setting('transaction_isolation');
  END IF;
  FOREACH k IN ARRAY p_keys LOOP
    IF NOT pg_try_advisory_xact_lock_shared(k) THEN
      busy := true;
      RETURN NEXT;
      RETURN;
    END IF;
  END LOOP;
  -- A statement of its own, so that its snapshot is taken with the locks held (see fence.rs).
  RETURN QUERY
  WITH page AS MATERIALIZED (
    SELECT ms.member_id, ms.role FROM memberships ms
    WHERE p_list = 'members' AND ms.group_id = p_group AND ms.member_id > p_after
    ORDER BY ms.member_id LIMIT p_limit
  ),
  -- The app's consents from the first id after the cursor to the page's last id, stopped one
  -- past the page's size (more than that: `listed` probes instead).
  near AS MATERIALIZED (
    SELECT c.member_id FROM consents c
    WHERE c.app = p_app AND c.member_id > p_after
      AND c.member_id <= (SELECT max(pg.member_id) FROM page pg)
    ORDER BY c.member_id LIMIT LEAST(p_limit, 9223372036854775806) + 1
  ),
  -- Each listed member with its consent (`OFFSET 0`: computed once per member, the planner
  -- does not copy the expression into each use), and the ids of the first
  -- `p_profiles_at_most` of the kinds whose profiles are asked for: their profiles are read
  -- below, by id, and no others.
  listed AS (
    SELECT array_agg(x.member_id) AS ids, array_agg(x.role) AS roles, array_agg(x.consented) AS consented,
      (array_agg(x.member_id ORDER BY x.member_id) FILTER (WHERE x.role = ANY(
        CASE WHEN x.consented THEN p_profiles_consenting ELSE p_profiles_not_consenting END))
      )[1:LEAST(p_profiles_at_most, 2147483647)::INT] AS profile_ids
    FROM (
      SELECT p.member_id, p.role,
        CASE
          WHEN (SELECT count(*) FROM near) <= p_limit THEN n.member_id IS NOT NULL
          ELSE (SELECT true FROM consents c WHERE c.app = p_app AND c.member_id = p.member_id) IS NOT NULL
        END AS consented
      FROM page p LEFT JOIN near n ON n.member_id = p.member_id
      OFFSET 0
    ) x
  ),
  posted AS (
    SELECT array_agg(s.id) AS ids, array_agg(s.content) AS contents, array_agg(s.created_at) AS created,
      array_agg(s.author) AS authors, array_agg(s.name) AS names, array_agg(s.picture_url) AS pictures,
      array_agg(s.role) AS roles, array_agg(s.consented) AS consented
    FROM (
      SELECT p.id, p.content, p.created_at, p.author,
        (SELECT m.name FROM members m WHERE m.id = p.author) AS name,
        (SELECT m.picture_url FROM members m WHERE m.id = p.author) AS picture_url,
        (SELECT ms.role FROM memberships ms WHERE ms.group_id = p_group AND ms.member_id = p.author) AS role,
        (SELECT true FROM consents c WHERE c.app = p_app AND c.member_id = p.author) IS NOT NULL AS consented
      FROM posts p
      WHERE p_list = 'posts' AND p.group_id = p_group AND p.id > p_after
      ORDER BY p.id LIMIT p_limit
    ) s
  )
  SELECT false,
    t.app, t.issued_at, t.expires_at, t.revoked_at,
    a.developer, a.name, a.category, a.status, a.client_id,
    i.authorized_by, i.installed_at,
    (SELECT g.name FROM groups g WHERE g.id = p_group),
    (SELECT pa.version FROM policy_activations pa ORDER BY pa.at DESC, pa.seq DESC LIMIT 1),
    CASE WHEN p_count THEN (SELECT COUNT(*) FROM memberships ms WHERE ms.group_id = p_group) END,
    floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
    listed.ids, listed.roles, listed.consented, listed.profile_ids,
    ARRAY(SELECT (SELECT m.name FROM members m WHERE m.id = u.id)
      FROM unnest(listed.profile_ids) WITH ORDINALITY AS u(id, i) ORDER BY u.i),
    ARRAY(SELECT (SELECT m.picture_url FROM members m WHERE m.id = u.id)
      FROM unnest(listed.profile_ids) WITH ORDINALITY AS u(id, i) ORDER BY u.i),
    posted.ids, posted.contents, posted.created, posted.authors, posted.names, posted.pictures,
    posted.roles, posted.consented
  FROM (SELECT 1) AS one
  LEFT JOIN tokens t ON t.hash = p_token
  LEFT JOIN apps a ON a.id = p_app
  LEFT JOIN installations i ON i.app = p_app AND i.group_id = p_group
  CROSS JOIN listed
  CROSS JOIN posted;
END
$$;
