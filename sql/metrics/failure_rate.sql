-- metric: failure_rate
-- definition: failed / sent
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: rate
CAST(COUNT(CASE WHEN failed THEN 1 END) AS DOUBLE) / CAST(NULLIF(COUNT(*), 0) AS DOUBLE)
