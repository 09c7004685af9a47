-- metric: cases_resolved
-- definition: cases with a resolved event
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: count
COUNT(CASE WHEN resolved THEN 1 END)
