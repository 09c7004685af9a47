-- metric: read_within_5m
-- definition: messages whose first read is at most 5 minutes after the send, / delivered
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: rate
CAST(COUNT(CASE WHEN read_secs <= 300 THEN 1 END) AS DOUBLE) / CAST(NULLIF(COUNT(CASE WHEN delivered THEN 1 END), 0) AS DOUBLE)
