-- metric: time_to_recover_p90
-- definition: 90th percentile of the recovering order's ts minus the cart's ts, in seconds
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
-- from: cart_units
-- type: seconds
percentile_cont(0.9) WITHIN GROUP (ORDER BY recover_secs)
