-- metric: rps
-- definition: revenue per send: attributed_revenue / sent, per currency
-- grain: message (cohort: the send's ts)
-- dimensions: campaign_id, template, category, experiment_id, arm, segment, country
-- from: derived
-- type: amount
-- per: currency
attributed_revenue / sent
