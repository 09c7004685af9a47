-- metric: read
-- definition: sent messages with a status read
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(CASE WHEN is_read THEN 1 END)
