-- metric: carts_targeted
-- definition: carts whose cart_id at least one send carries
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
-- from: cart_units
-- type: count
COUNT(*)
