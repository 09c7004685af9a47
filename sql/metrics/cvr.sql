-- metric: cvr
-- definition: clicked messages with an order attributed by rule explicit or click, / clicked
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: message_units
-- type: rate
CAST(COUNT(CASE WHEN click_converted THEN 1 END) AS DOUBLE) / CAST(NULLIF(COUNT(CASE WHEN clicked THEN 1 END), 0) AS DOUBLE)
