-- A members page's snapshot carries each member's id, role and consent, never a profile: the
-- profiles (name, picture) of the members a page shows are read afterwards, by id, so those of
-- members an app may not see are never read. Same signature as V1's function (subject_name and
-- subject_picture stay NULL on member rows; post rows still carry their author). Never edit
-- this file: add V4__….sql.
CREATE OR REPLACE FUNCTION consentry_read_page(
  p_token TEXT, p_app TEXT, p_group TEXT, p_list TEXT, p_after TEXT, p_limit BIGINT,
  p_count BOOLEAN, p_keys BIGINT[]
) RETURNS TABLE (
  kind TEXT,
  token_app TEXT, token_issued_at BIGINT, token_expires_at BIGINT, token_revoked_at BIGINT,
  app_developer TEXT, app_name TEXT, app_category TEXT, app_status TEXT, app_client_id TEXT,
  installed_by TEXT, installed_at BIGINT,
  group_name TEXT, policy_version BIGINT, member_count BIGINT, released_at BIGINT,
  subject_id TEXT, subject_name TEXT, subject_picture TEXT, subject_role TEXT, consented BOOLEAN,
  post_id TEXT, post_content TEXT, post_created_at BIGINT
) LANGUAGE plpgsql VOLATILE AS $$
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
      kind := 'busy';
      RETURN NEXT;
      RETURN;
    END IF;
  END LOOP;
  RETURN QUERY
  SELECT 'context'::TEXT,
    t.app, t.issued_at, t.expires_at, t.revoked_at,
    a.developer, a.name, a.category, a.status, a.client_id,
    i.authorized_by, i.installed_at,
    (SELECT g.name FROM groups g WHERE g.id = p_group),
    (SELECT pa.version FROM policy_activations pa ORDER BY pa.at DESC, pa.seq DESC LIMIT 1),
    CASE WHEN p_count THEN (SELECT COUNT(*) FROM memberships ms WHERE ms.group_id = p_group) END,
    floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT,
    NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BOOLEAN, NULL::TEXT, NULL::TEXT, NULL::BIGINT
  FROM (SELECT 1) AS one
  LEFT JOIN tokens t ON t.hash = p_token
  LEFT JOIN apps a ON a.id = p_app
  LEFT JOIN installations i ON i.app = p_app AND i.group_id = p_group
  UNION ALL
  (SELECT 'member'::TEXT,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    ms.member_id, NULL::TEXT, NULL::TEXT, ms.role, c.member_id IS NOT NULL, NULL, NULL, NULL
  FROM memberships ms
  LEFT JOIN consents c ON c.app = p_app AND c.member_id = ms.member_id
  WHERE p_list = 'members' AND ms.group_id = p_group AND ms.member_id > p_after
  ORDER BY ms.member_id LIMIT p_limit)
  UNION ALL
  (SELECT 'post'::TEXT,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    m.id, m.name, m.picture_url, ms.role, c.member_id IS NOT NULL, p.id, p.content, p.created_at
  FROM posts p JOIN members m ON m.id = p.author
  LEFT JOIN memberships ms ON ms.group_id = p.group_id AND ms.member_id = p.author
  LEFT JOIN consents c ON c.app = p_app AND c.member_id = p.author
  WHERE p_list = 'posts' AND p.group_id = p_group AND p.id > p_after
  ORDER BY p.id LIMIT p_limit);
END
$$;
