-- metric: opt_outs
-- definition: distinct recipients with a marketing/all opt_out consent event or an inbound stop within 7 days after one of the period's messages to them
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: count
COUNT(DISTINCT CASE WHEN opted_out_after THEN phone_hash END)
