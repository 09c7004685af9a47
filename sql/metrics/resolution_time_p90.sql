-- metric: resolution_time_p90
-- definition: 90th percentile of the first resolved ts minus opened ts, in seconds
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: seconds
quantile_cont(resolution_secs, 0.9)
