-- metric: opt_out_rate
-- definition: opt_outs / distinct recipients sent
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: rate
CAST(COUNT(DISTINCT CASE WHEN opted_out_after THEN phone_hash END) AS DOUBLE) / CAST(NULLIF(COUNT(DISTINCT phone_hash), 0) AS DOUBLE)
