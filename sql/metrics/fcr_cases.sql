-- metric: fcr_cases
-- definition: resolved cases with no reopened event whose first resolved is within 24 h of opened
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: count
COUNT(CASE WHEN fcr THEN 1 END)
