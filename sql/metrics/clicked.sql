-- metric: clicked
-- definition: sent messages with at least one click
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(CASE WHEN clicked THEN 1 END)
