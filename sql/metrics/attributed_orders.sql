-- metric: attributed_orders
-- definition: orders attributed to the period's messages (explicit > click > view)
-- grain: attributed order (cohort: the message's send ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: attributed_orders
-- type: count
COUNT(*)
