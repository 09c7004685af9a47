-- metric: replied
-- definition: sent messages credited by at least one inbound message (the quoted message, else the latest message within the previous 24 h)
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(CASE WHEN replied THEN 1 END)
