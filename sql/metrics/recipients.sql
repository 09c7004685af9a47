-- metric: recipients
-- definition: distinct recipients (phone_hash) of the period's messages
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(DISTINCT phone_hash)
