-- metric: frt_median
-- definition: median first-response time (first_response ts minus opened ts), in seconds
-- grain: support case (cohort: the opened ts)
-- dimensions: 
-- from: case_units
-- type: seconds
quantile_cont(frt_secs, 0.5)
