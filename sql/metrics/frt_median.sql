-- metric: frt_median
-- definition: median first-response time (first_response ts minus opened ts), in seconds
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: seconds
percentile_cont(0.5) WITHIN GROUP (ORDER BY frt_secs)
