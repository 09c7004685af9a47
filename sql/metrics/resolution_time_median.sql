-- metric: resolution_time_median
-- definition: median of the first resolved ts minus opened ts, in seconds
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: seconds
percentile_cont(0.5) WITHIN GROUP (ORDER BY resolution_secs)
