-- metric: delivered
-- definition: sent messages with a status delivered or read (Meta may skip delivered)
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(CASE WHEN delivered THEN 1 END)
