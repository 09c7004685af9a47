-- metric: frt_p90
-- definition: 90th percentile of the first-response time, in seconds
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: seconds
quantile_cont(frt_secs, 0.9)
