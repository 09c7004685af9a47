-- metric: frt_p90
-- definition: 90th percentile of the first-response time, in seconds
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: seconds
percentile_cont(0.9) WITHIN GROUP (ORDER BY frt_secs)
