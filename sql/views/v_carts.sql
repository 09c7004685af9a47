-- view: v_carts
-- definition: carts deduplicated by cart_id; the first copy (earliest received_at, ties earliest ts) wins
SELECT * EXCLUDE (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY cart_id ORDER BY received_at, ts) AS rn
  FROM carts
) WHERE rn = 1
