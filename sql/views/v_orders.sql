-- view: v_orders
-- definition: orders deduplicated by order_id; the copy with the latest updated_at (else received_at) wins, ties the latest received_at. Test and cancelled orders stay in the view; every metric excludes them.
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY order_id
    ORDER BY COALESCE(updated_at, received_at) DESC, received_at DESC
  ) AS rn
  FROM orders
) WHERE rn = 1
