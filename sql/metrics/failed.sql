-- metric: failed
-- definition: sent messages with a status failed and no delivered/read
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(CASE WHEN failed THEN 1 END)
