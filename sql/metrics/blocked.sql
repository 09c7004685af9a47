-- metric: blocked
-- definition: sent messages failed with error code 131050 (user stopped marketing messages)
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(CASE WHEN blocked THEN 1 END)
