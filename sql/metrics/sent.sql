-- metric: sent
-- definition: distinct message_id in v_sends
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(*)
