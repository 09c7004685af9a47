-- metric: csat
-- definition: mean of each case's latest csat, where present
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: mean
AVG(csat)
