-- pgbench script: the SQL of one order (two products), as the shop's order service sends it.
\set a random(1, 1000)
\set b (:a % 1000) + 1
BEGIN;
SELECT id, price, stock, hidden FROM products WHERE id IN (:a, :b) ORDER BY id FOR UPDATE;
INSERT INTO orders (user_id, status, total, created_at, updated_at) VALUES (1, 'pending', 10.00, now(), now()) RETURNING id \gset
UPDATE products SET stock = stock - 1, updated_at = now() WHERE id IN (:a, :b);
INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (:id, :a, 1, 5.00), (:id, :b, 1, 5.00);
INSERT INTO email_outbox (order_id, status, attempts, next_attempt_at, created_at) VALUES (:id, 'pending', 0, now(), now());
END;
