-- metric: recovered_revenue
-- definition: sum of the recovering orders' totals, per currency
-- grain: targeted cart (cohort: the first reminder's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country, step
-- from: cart_units
-- type: amount
-- per: currency
SUM(recovered_total)
