-- metric: containment
-- definition: resolved cases with no handoff and no agent actor, / cases_resolved
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: rate
CAST(COUNT(CASE WHEN contained THEN 1 END) AS DOUBLE) / CAST(NULLIF(COUNT(CASE WHEN resolved THEN 1 END), 0) AS DOUBLE)
