-- metric: attributed_revenue
-- definition: sum of the attributed orders' total, per currency
-- grain: attributed order (cohort: the message's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: attributed_orders
-- type: amount
-- per: currency
SUM(total)
