-- metric: carts_recovered
-- definition: targeted carts with an order (same cart_id, or no cart_id and the same phone_hash) within 7 days after the first reminder
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
-- from: cart_units
-- type: count
COUNT(CASE WHEN recovered THEN 1 END)
