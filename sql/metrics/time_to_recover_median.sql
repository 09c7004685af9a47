-- metric: time_to_recover_median
-- definition: median of the recovering order's ts minus the cart's ts, in seconds
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
-- from: cart_units
-- type: seconds
quantile_cont(recover_secs, 0.5)
