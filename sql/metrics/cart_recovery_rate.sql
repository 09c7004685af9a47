-- metric: cart_recovery_rate
-- definition: carts_recovered / carts_targeted
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
-- from: cart_units
-- type: rate
CAST(COUNT(CASE WHEN recovered THEN 1 END) AS DOUBLE) / CAST(NULLIF(COUNT(*), 0) AS DOUBLE)
