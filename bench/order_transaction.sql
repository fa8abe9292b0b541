-- pgbench script: the SQL of one order (two products, an Idempotency-Key), statement for statement as
-- the shop sends it (simple protocol, like psycopg2; the token's revocation check left out, which
-- Redis answers). One transaction: the token check reads the buyer,
-- then the order claims its key (inserting only when it takes the key's advisory lock), takes both
-- lines' stock in one UPDATE (rows locked in id order by its CTE, which leaves alone rows it cannot
-- take), inserts the order, both items and the email's outbox row in one statement (data-modifying
-- CTEs), and stores the answer on the key. The shop's Python timestamps are now() here, its lock
-- key (a hash) a unique number.
-- Variables from `pgbench -D`: user_id (the buyer), products (how many ids, from 1).
\set a random(1, :products)
\set b (:a % :products) + 1
\set nonce random(1, 1000000000000)
\set lock_key :client_id * 1000000000000 + :nonce
BEGIN;
SELECT users.id, users.username, users.email, users.password_hash, users.first_name, users.last_name, users.phone_number, users.is_staff, users.is_active, users.date_joined FROM users WHERE users.id = :user_id;
INSERT INTO idempotency_keys (user_id, key, request_hash, created_at) SELECT :user_id::INTEGER AS anon_1, ('pgbench-' || :client_id || '-' || :nonce)::VARCHAR AS anon_2, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'::VARCHAR AS anon_3, now()::TIMESTAMP WITH TIME ZONE AS anon_4 WHERE pg_try_advisory_xact_lock(:lock_key::BIGINT) ON CONFLICT (user_id, key) DO UPDATE SET request_hash = excluded.request_hash, status_code = NULL, response_body = NULL, created_at = excluded.created_at WHERE idempotency_keys.created_at < now() - interval '24 hours' OR idempotency_keys.status_code IS NULL RETURNING idempotency_keys.id AS key_id \gset
WITH locked AS MATERIALIZED (SELECT products.id AS id FROM products WHERE products.id IN (:a, :b) AND products.hidden IS false AND products.stock >= CASE products.id WHEN :a THEN 1 WHEN :b THEN 1 END ORDER BY products.id FOR NO KEY UPDATE) UPDATE products SET stock=(products.stock - CASE products.id WHEN :a THEN 1 WHEN :b THEN 1 END), stock_version=(products.stock_version + 1::BIGINT), updated_at=now() WHERE products.id IN (SELECT locked.id FROM locked) AND products.hidden IS false AND products.stock >= CASE products.id WHEN :a THEN 1 WHEN :b THEN 1 END RETURNING products.id, products.name, products.description, products.price, products.stock, products.stock_version, products.image, products.category_id, (SELECT categories.name FROM categories WHERE categories.id = products.category_id) AS category_name, (SELECT categories.description FROM categories WHERE categories.id = products.category_id) AS category_description, products.created_at, products.updated_at;
WITH placed AS (INSERT INTO orders (user_id, status, total, created_at, updated_at) VALUES (:user_id, 'pending', 10.00, now(), now()) RETURNING orders.id), owed AS (INSERT INTO email_outbox (order_id, status, attempts, next_attempt_at, created_at) SELECT placed.id AS id, 'pending' AS anon_1, 0 AS anon_2, now() AS anon_3, now() AS anon_4 FROM placed), item AS (INSERT INTO order_items (order_id, product_id, quantity, unit_price) SELECT placed.id AS id, line.product_id AS product_id, line.quantity AS quantity, line.unit_price AS unit_price FROM placed JOIN (SELECT :a AS product_id, 1 AS quantity, 5.00 AS unit_price UNION ALL SELECT :b AS product_id, 1 AS quantity, 5.00 AS unit_price) AS line ON true RETURNING order_items.id, order_items.product_id) SELECT placed.id AS order_id, item.id AS item_id, item.product_id FROM placed JOIN item ON true;
UPDATE idempotency_keys SET status_code=201, response_body=convert_to(repeat('x', 900), 'UTF8') WHERE idempotency_keys.id = :key_id;
END;
