-- metric: csat_count
-- definition: cases with a csat (the csat mean's count)
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: count
COUNT(csat)
